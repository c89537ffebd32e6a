"""Input rules that more than one service's request bodies share."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body that refuses fields it does not know, so a typo is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and no name needs one: refuse it as input, not as a 500."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[str, Field(max_length=200), AfterValidator(no_nul)]


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
