"""Identities: password hashing, user access tokens (JWT), refresh tokens, device keys and
personal access tokens.

Every service verifies the caller itself with the shared signing secret (ET_JWT_SECRET), so a
service reached directly, around the gateway, is as closed as it is behind it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
ALGORITHM = "HS256"
DEVICE_KEY_PREFIX = "etk_"
PERSONAL_TOKEN_PREFIX = "etp_"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a user (with a role) or a device authenticated by its ingest key.

    A user who called with a personal access token carries its id, and `read_only` when it is
    a `read` token."""

    kind: Literal["user", "device"]
    user_id: str
    role: str = "user"
    device_id: str | None = None
    # (household id, role there) of each household the user belongs to, their own first:
    # what `core.authz` decides by.
    households: tuple[tuple[str, str], ...] = ()
    token_id: str | None = None
    read_only: bool = False

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"


def normalize_email(email: str) -> str:
    """The stored form of an email: what makes Alice@Example.com and alice@example.com one user
    (and one account for the gateway's login limits)."""
    return email.strip().lower()


# -- passwords ---------------------------------------------------------------------------------


# Argon2 takes 64 MiB and tens of milliseconds of CPU per call: it runs in a worker thread, so
# the event loop keeps serving everyone else, and one at a time, so a burst of logins or sign-ups
# costs 64 MiB, not 64 MiB each (four at once made `up`'s peak RSS ~480 MB in the benchmark's
# sign-ups). One call already spreads over the cores (4 lanes, in threads of libargon2), so more
# at once would not be faster on a small box.
_HASHING = threading.BoundedSemaphore(1)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


def _hash(password: str) -> str:
    with _HASHING:
        return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    with _HASHING:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


# A hash to verify against when the account does not exist, so timing does not reveal accounts.
DUMMY_PASSWORD_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


# -- access tokens -----------------------------------------------------------------------------


class InvalidToken(Exception):
    """The token is missing, malformed, tampered with, expired or not ours."""


def issue_access_token(
    user_id: str, role: str, *, secret: str, issuer: str, ttl_s: int, now: float | None = None
) -> str:
    iat = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "role": role,
        "iss": issuer,
        "iat": iat,
        "exp": iat + ttl_s,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_access_token(token: str, *, secret: str, issuer: str) -> Identity:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise InvalidToken("not an access token")
    return Identity("user", claims["sub"], str(claims.get("role", "user")))


# -- opaque secrets (refresh tokens, device keys) ----------------------------------------------


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_device_key() -> str:
    return DEVICE_KEY_PREFIX + secrets.token_urlsafe(32)


def secret_digest(value: str) -> str:
    """SHA-256 of a high-entropy secret (device key, refresh or personal access token).

    Stored instead of the secret, so a copy of the database lets nobody in. A fast hash is right
    here and argon2 is not: argon2 is slow to make guessing a *person's* password costly, but
    256 random bits cannot be guessed from their digest however fast it is, and argon2 would
    cost every request 64 MiB and tens of milliseconds for nothing. No salt either: no two
    random secrets are alike, and an unsalted digest is what the lookup is indexed by."""
    return hashlib.sha256(value.encode()).hexdigest()


# -- personal access tokens --------------------------------------------------------------------

_ID_BYTES, _SECRET_BYTES, _TAG_BYTES = 16, 32, 16
_TOKEN_BYTES = _ID_BYTES + _SECRET_BYTES + _TAG_BYTES


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """What the metadata store holds about one personal access token (never the token)."""

    token_id: str
    user_id: str
    token_hash: str
    scope: Literal["read", "write"]
    expires_at: datetime | None  # aware, UTC; None: never
    revoked: bool


def new_personal_token(token_id: uuid.UUID, *, secret: str) -> str:
    """`etp_` and, base64url, the token's id, 32 random bytes and a 16-byte HMAC of both under
    the signing secret.

    The prefix tells secret scanners and `Authenticator` a token from a JWT. The tag lets any
    process (the gateway's rate limiter, a service refusing junk) check a token was made here and
    learn its id without a database query; the random part, whose SHA-256 alone is stored, is what
    makes it unguessable even to whoever knows the signing secret.
    """
    body = token_id.bytes + secrets.token_bytes(_SECRET_BYTES)
    return PERSONAL_TOKEN_PREFIX + _b64(body + _tag(body, secret))


def personal_token_id(token: str, *, secret: str) -> str:
    """The id of a personal access token made with `secret`; InvalidToken for anything else.

    This proves the token was issued here, not that it is still live: that is the store's
    answer (`AccessGrant`)."""
    if not token.startswith(PERSONAL_TOKEN_PREFIX):
        raise InvalidToken("not a personal access token")
    encoded = token[len(PERSONAL_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed personal access token") from None
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(raw) != _TOKEN_BYTES or not hmac.compare_digest(tag, _tag(body, secret)):
        raise InvalidToken("malformed personal access token")
    return str(uuid.UUID(bytes=body[:_ID_BYTES]))


def token_principal(token: str, *, secret: str, issuer: str) -> str | None:
    """Whose budget a bearer token spends (rate limits, open streams), from its signature alone:
    `user:<id>` for a session's JWT, `token:<id>` for a personal access token, None when it is
    not genuine (the caller then counts as its address)."""
    try:
        if token.startswith(PERSONAL_TOKEN_PREFIX):
            return "token:" + personal_token_id(token, secret=secret)
        return "user:" + verify_access_token(token, secret=secret, issuer=issuer).user_id
    except InvalidToken:
        return None


def _tag(body: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), b"pat|" + body, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
