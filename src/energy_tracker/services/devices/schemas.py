"""Request and response bodies of the devices service."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from energy_tracker.core.consumption import DEFAULT_ROLE, Role
from energy_tracker.core.validators import Name, check_timezone, not_null

MAX_METADATA_DEPTH = 8


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(repr(value)) > 4096:
        raise ValueError("metadata is limited to 4 KiB")
    if value is not None and _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests at most {MAX_METADATA_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """Levels of objects and arrays; the 4 KiB bound above keeps this recursion short."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


DeviceType = Literal["meter", "plug", "solar", "battery", "ev_charger", "heat_pump", "other"]

ROLE_DESCRIPTION = (
    "What the device measures in its home: grid (the main meter; negative power = export), "
    "production (solar; production is positive), battery (charging positive, discharging "
    "negative), ev_charger or consumer (a load measured on its own), sub (a circuit or appliance "
    "inside the device parent_id names). Loads break a metered home's consumption down and never "
    "add to it."
)
PARENT_DESCRIPTION = (
    "The device this one sits inside (a grid meter or another load, in the same home); "
    "required for a sub, allowed for loads, null otherwise."
)


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Name, Field(min_length=1)]
    type: DeviceType
    timezone: str | None = Field(
        default=None, max_length=64, description="IANA name; left out, the household's applies"
    )
    household_id: str | None = Field(
        default=None, max_length=64, description="One of your households; default: your own."
    )
    location: Name | None = None
    metadata: dict[str, Any] | None = None
    role: Role = Field(default=DEFAULT_ROLE, description=ROLE_DESCRIPTION)
    parent_id: str | None = Field(default=None, max_length=64, description=PARENT_DESCRIPTION)

    _tz = field_validator("timezone")(check_timezone)
    _meta = field_validator("metadata")(check_metadata)


class DevicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Name, Field(min_length=1)] | None = None
    type: DeviceType | None = None
    timezone: str | None = Field(
        default=None, max_length=64, description="IANA name; null: follow the household's"
    )
    location: Name | None = None
    metadata: dict[str, Any] | None = None
    disabled: bool | None = None
    role: Role | None = Field(default=None, description=ROLE_DESCRIPTION)
    parent_id: str | None = Field(default=None, max_length=64, description=PARENT_DESCRIPTION)

    _tz = field_validator("timezone")(check_timezone)
    _meta = field_validator("metadata")(check_metadata)
    _set = field_validator("name", "type", "disabled", "role", mode="before")(not_null)


class DeviceOut(BaseModel):
    id: str
    owner_id: str = Field(description="the account that registered it")
    household_id: str
    name: str
    type: str
    timezone: str = Field(description="the device's own time zone, else its household's")
    location: str | None
    metadata: dict[str, Any] | None
    disabled: bool
    created_at: str
    role: Role = Field(description=ROLE_DESCRIPTION)
    parent_id: str | None = Field(description=PARENT_DESCRIPTION)


class DeviceWithKey(DeviceOut):
    api_key: str = Field(description="The ingest key: shown once, stored only as a hash.")
