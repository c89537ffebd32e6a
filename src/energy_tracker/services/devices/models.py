"""Devices as plain values (what other services may know of one is `core.directory`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEVICE_TYPES = ("meter", "plug", "solar", "battery", "ev_charger", "heat_pump", "other")


@dataclass(frozen=True)
class Device:
    """A registered device; its ingest key is stored only as a hash and never appears here."""

    id: str
    owner_id: str  # the account that registered it
    household_id: str
    name: str
    type: str  # one of DEVICE_TYPES
    timezone: str | None  # None: its household's time zone applies
    location: str | None
    meta: dict[str, Any] | None
    disabled: bool
    created_at: datetime  # aware, UTC
    role: str = "consumer"  # one of core.consumption.Role
    parent_id: str | None = None  # the device a sub-meter sits inside
