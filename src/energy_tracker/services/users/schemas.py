"""Request and response bodies of the users service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
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


class ProfilePatch(Strict):
    name: Name | None = None
    timezone: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    tariff: Tariff | None = None

    _tz = field_validator("timezone")(check_timezone)
    _set = field_validator("timezone", "currency", mode="before")(not_null)


class AdminUserPatch(Strict):
    disabled: bool | None = None
    role: Literal["user", "admin"] | None = None


class UserOut(BaseModel):
    id: str
    email: str
    name: str | None
    role: str
    disabled: bool
    timezone: str
    currency: str
    tariff: dict | None
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
