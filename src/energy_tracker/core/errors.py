"""Errors that cross layers: a backend that cannot be reached, and API errors with a JSON body."""

from __future__ import annotations

from typing import Any


class BackendUnavailable(Exception):
    """A configured backend cannot be reached; the message names the variable and the URL."""

    def __init__(self, variable: str, url: str, reason: str) -> None:
        super().__init__(f"{variable}={redact_url(url)} is unreachable: {reason}")
        self.variable = variable
        self.url = url


class UnsupportedUrl(Exception):
    """A URL whose scheme no adapter handles."""

    def __init__(self, variable: str, url: str, supported: str) -> None:
        super().__init__(f"{variable}={redact_url(url)} is not supported (use {supported})")


class ApiError(Exception):
    """An error a client should see: status, a stable code, a message and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def redact_url(url: str) -> str:
    """Hide a password in a URL so it never reaches a log line or the console."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
