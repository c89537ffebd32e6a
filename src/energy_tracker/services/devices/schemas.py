"""Request and response bodies of the devices service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from energy_tracker.services.users.schemas import check_timezone


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(repr(value)) > 4096:
        raise ValueError("metadata is limited to 4 KiB")
    return value


DeviceType = Literal["meter", "plug", "solar", "battery", "ev_charger", "heat_pump", "other"]


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    type: DeviceType
    timezone: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None

    _tz = field_validator("timezone")(check_timezone)
    _meta = field_validator("metadata")(check_metadata)


class DevicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: DeviceType | None = None
    timezone: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None
    disabled: bool | None = None

    _tz = field_validator("timezone")(check_timezone)
    _meta = field_validator("metadata")(check_metadata)


class DeviceOut(BaseModel):
    id: str
    owner_id: str
    name: str
    type: str
    timezone: str | None
    location: str | None
    metadata: dict[str, Any] | None
    disabled: bool
    created_at: str


class DeviceWithKey(DeviceOut):
    api_key: str = Field(description="The ingest key: shown once, stored only as a hash.")
