"""Request and response bodies of the users service."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from energy_tracker.core.validators import Name, Strict, check_timezone, not_null

Price = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
Email = Annotated[EmailStr, Field(max_length=254)]


class Band(Strict):
    from_hour: int = Field(ge=0, le=23)
    to_hour: int = Field(ge=1, le=24)
    price_per_kwh: Price


class FlatTariff(Strict):
    type: Literal["flat"]
    price_per_kwh: Price
    standing_charge_per_day: Price | None = None
    export_price_per_kwh: Price | None = None


class TouTariff(Strict):
    type: Literal["tou"]
    bands: list[Band] = Field(min_length=1, max_length=24)
    standing_charge_per_day: Price | None = None
    export_price_per_kwh: Price | None = None

    @model_validator(mode="after")
    def bands_cover_the_day_once(self) -> TouTariff:
        hours = [0] * 24
        for band in self.bands:
            span = (
                range(band.from_hour, band.to_hour)
                if band.from_hour < band.to_hour
                else [*range(band.from_hour, 24), *range(band.to_hour % 24)]
            )
            for h in span:
                hours[h] += 1
        if any(count != 1 for count in hours):
            raise ValueError("bands must cover each of the 24 local hours exactly once")
        return self


Tariff = Annotated[FlatTariff | TouTariff, Field(discriminator="type")]


class RegisterIn(Strict):
    email: Email
    password: str = Field(min_length=10, max_length=256)
    name: Name | None = None


class LoginIn(Strict):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)
    # A browser asks for its refresh token as an HttpOnly cookie instead of in the body.
    refresh_in_cookie: bool = False


class RefreshIn(Strict):
    refresh_token: str = Field(max_length=256)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str | None = None  # None when it was set as a cookie


class SettingsPatch(Strict):
    """A household's settings (once a user's, hence also PATCH /users/me for one release)."""

    timezone: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    tariff: Tariff | None = None

    _tz = field_validator("timezone")(check_timezone)
    _set = field_validator("timezone", "currency", mode="before")(not_null)

    def settings(self) -> dict[str, Any]:
        """The fields given, as the store takes them (a tariff as plain JSON)."""
        fields = self.model_dump(exclude_unset=True, exclude={"name"})
        if "tariff" in fields and self.tariff is not None:
            fields["tariff"] = self.tariff.model_dump(exclude_none=True)
        return fields


def _deprecate_settings(schema: dict[str, Any]) -> None:
    for field in ("timezone", "currency", "tariff"):
        schema["properties"][field]["deprecated"] = True
        schema["properties"][field]["description"] = (
            "Deprecated (one release): your own household's; PATCH /households/{id}."
        )


class ProfilePatch(SettingsPatch):
    """Your name; and, deprecated, the settings of your own household."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_deprecate_settings)

    name: Name | None = None


class HouseholdPatch(SettingsPatch):
    name: Annotated[Name, Field(min_length=1)] | None = None
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2; null: none"
    )

    _named = field_validator("name", mode="before")(not_null)

    def settings(self) -> dict[str, Any]:
        fields = super().settings()
        if "name" in self.model_fields_set:
            fields["name"] = self.name
        return fields


MemberRole = Literal["owner", "member", "viewer"]


class MemberIn(Strict):
    email: Email
    role: Literal["member", "viewer"] = Field(
        description="owner is given by PATCH of a member's role (a transfer)"
    )


class MemberPatch(Strict):
    role: MemberRole | None = Field(
        default=None,
        description="owner transfers the household: its other owners become members",
    )
    notify_email: bool | None = Field(
        default=None, description="alert e-mails to this member; a member may set their own"
    )

    _set = field_validator("role", "notify_email", mode="before")(not_null)


class MemberOut(BaseModel):
    user_id: str
    email: str
    name: str | None
    role: str
    notify_email: bool
    joined_at: str


class InvitationOut(BaseModel):
    id: str
    household_id: str
    email: str
    role: str
    expires_at: str


class MemberAdded(BaseModel):
    status: Literal["joined", "invited"] = Field(
        description="joined: the account existed and is a member now; invited: registering "
        "with this e-mail within 7 days joins"
    )
    member: MemberOut | None = None
    invitation: InvitationOut | None = None


class HouseholdOut(BaseModel):
    id: str
    name: str
    role: str | None = Field(description="yours; null for an admin who is not a member")
    timezone: str
    currency: str
    tariff: dict | None
    country: str | None
    created_at: str


class HouseholdDetail(HouseholdOut):
    members: list[MemberOut]
    invitations: list[InvitationOut] = Field(description="pending, not yet expired")


class HouseholdList(BaseModel):
    items: list[HouseholdOut]


class AdminUserPatch(Strict):
    disabled: bool | None = None
    role: Literal["user", "admin"] | None = None


class UserOut(BaseModel):
    id: str
    email: str
    name: str | None
    role: str
    disabled: bool
    timezone: str = Field(description="deprecated: your own household's (GET /households)")
    currency: str = Field(description="deprecated: your own household's")
    tariff: dict | None = Field(description="deprecated: your own household's")
    created_at: str


class AccessTokenIn(Strict):
    name: Annotated[Name, Field(min_length=1)]
    scope: Literal["read", "write"]
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)  # None: never expires


class AccessTokenOut(BaseModel):
    id: str
    name: str
    scope: Literal["read", "write"]
    created_at: str
    expires_at: str | None
    last_used_at: str | None  # to within a minute


class NewAccessTokenOut(AccessTokenOut):
    token: str  # shown this once: only its hash is kept
