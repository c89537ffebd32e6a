"""The user as the rest of the code sees it: a plain value, free of the database layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class User:
    """An account: credentials, role and the profile that prices and dates its usage."""

    id: str
    email: str  # lower-cased
    password_hash: str
    name: str | None
    role: str  # "user" or "admin"
    disabled: bool
    timezone: str  # IANA name; the default zone of the user's devices
    currency: str  # ISO 4217 code
    tariff: dict[str, Any] | None  # flat or time-of-use, as in PATCH /users/me
    created_at: datetime  # aware, UTC


@dataclass(frozen=True)
class AccessToken:
    """A personal access token as its owner sees it listed: never the token itself."""

    id: str
    user_id: str
    name: str
    scope: str  # "read" or "write"
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None  # to within a minute
    revoked_at: datetime | None
