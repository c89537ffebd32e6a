"""A browser's session: the refresh token in a cookie no script can read.

A page keeps its access token in memory only. The refresh token travels in an `HttpOnly`,
`SameSite=Strict` cookie (`Secure` over https) sent to the refresh route alone, so an injected
script can neither read it nor have it sent anywhere else. Refreshing with the cookie also needs
the `X-CSRF-Token` header to carry an HMAC of that refresh token: the page reads it from a
second cookie, which another site can neither read nor make the browser send in a header, so a
forged cross-site request is refused even by a browser that ignored SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from fastapi import Request, Response

REFRESH_COOKIE = "et_refresh"
CSRF_COOKIE = "et_csrf"
CSRF_HEADER = "x-csrf-token"


def csrf_token(secret: str, refresh_token: str) -> str:
    """The CSRF value bound to one refresh token: changes whenever the token rotates."""
    return hmac.new(secret.encode(), b"csrf|" + refresh_token.encode(), hashlib.sha256).hexdigest()


def set_session(
    request: Request, response: Response, refresh_token: str, ttl: timedelta, refresh_path: str
) -> None:
    """Put a refresh token and its CSRF value into the browser's cookies."""
    secure = request.url.scheme == "https"
    max_age = int(ttl.total_seconds())
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=max_age,
        path=refresh_path,
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token(request.app.state.secret, refresh_token),
        max_age=max_age,
        path="/",
        samesite="strict",
        secure=secure,
    )


def clear_session(response: Response, refresh_path: str) -> None:
    response.delete_cookie(REFRESH_COOKIE, path=refresh_path, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")


def session_refresh_token(request: Request) -> str | None:
    """The cookie's refresh token when the request also proves it comes from our page, else
    None."""
    token = request.cookies.get(REFRESH_COOKIE)
    sent = request.headers.get(CSRF_HEADER, "")
    if not token or not hmac.compare_digest(sent, csrf_token(request.app.state.secret, token)):
        return None
    return token
