"""Which service answers which public path: the one table the gateway routes by."""

from __future__ import annotations

import re

from energy_tracker.core.authz import API_PREFIX

__all__ = ["API_PREFIX", "service_for"]

_DEVICE_DATA = re.compile(r"^/devices/[^/]+/(usage|readings|live)$")
_BY_FIRST_SEGMENT = {
    "auth": "users",
    "users": "users",
    "households": "users",
    "devices": "devices",
    "readings": "ingestion",
    "usage": "usage",
    "alert-rules": "alerts",
    "alerts": "alerts",
    "insights": "insights",
}


def service_for(path: str) -> str | None:
    """The service owning an API path (the part after /api/v1), or None when none does."""
    if _DEVICE_DATA.match(path):
        return "usage"
    first = path.lstrip("/").split("/", 1)[0]
    return _BY_FIRST_SEGMENT.get(first)
