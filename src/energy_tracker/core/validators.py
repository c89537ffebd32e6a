"""Input rules that more than one service's request bodies share."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body that refuses fields it does not know, so a typo is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


def printable(value: str) -> str:
    """Control characters (newline, NUL, escape...) have no place in a name: a newline breaks an
    e-mail header, a NUL is refused by PostgreSQL."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (newline, tab, NUL...)")
    return value


Name = Annotated[str, Field(max_length=200), AfterValidator(printable)]
"""A display name: of a user, a device, a rule, a token."""


def not_null(value: Any) -> Any:
    """For PATCH fields that may be left out but not cleared: an explicit null is an error."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


def check_timezone(value: str | None) -> str | None:
    """An IANA zone name this machine knows, or None; a clear message otherwise."""
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return value
