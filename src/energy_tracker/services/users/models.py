"""The user as the rest of the code sees it: a plain value, free of the database layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class User:
    """An account: credentials and role (its usage is dated and priced by its households)."""

    id: str
    email: str  # lower-cased
    password_hash: str
    name: str | None
    role: str  # "user" or "admin"
    disabled: bool
    created_at: datetime  # aware, UTC


@dataclass(frozen=True)
class Household:
    """A home: the settings that date and price its devices' readings."""

    id: str
    name: str
    timezone: str  # IANA name; the default zone of its devices
    currency: str  # ISO 4217 code
    tariff: dict[str, Any] | None  # flat or time-of-use, as in PATCH /households/{id}
    country: str | None  # ISO 3166-1 alpha-2
    created_at: datetime  # aware, UTC


@dataclass(frozen=True)
class Member:
    """A user's place in a household."""

    household_id: str
    user_id: str
    email: str
    name: str | None
    role: str  # owner | member | viewer
    notify_email: bool  # alert e-mails go to them too
    joined_at: datetime


@dataclass(frozen=True)
class Invitation:
    """An e-mail invited into a household before it had an account."""

    id: str
    household_id: str
    email: str
    role: str
    invited_by: str | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None


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
