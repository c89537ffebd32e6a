"""Identities: password hashing, user access tokens (JWT), refresh tokens and device keys.

Every service verifies the caller itself with the shared signing secret (ET_JWT_SECRET), so a
service reached directly, around the gateway, is as closed as it is behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
ALGORITHM = "HS256"
DEVICE_KEY_PREFIX = "etk_"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a user (with a role) or a device authenticated by its ingest key."""

    kind: Literal["user", "device"]
    user_id: str
    role: str = "user"
    device_id: str | None = None
    # (household id, role there) of each household the user belongs to, their own first:
    # what `core.authz` decides by.
    households: tuple[tuple[str, str], ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"


def normalize_email(email: str) -> str:
    """The stored form of an email: what makes Alice@Example.com and alice@example.com one user
    (and one account for the gateway's login limits)."""
    return email.strip().lower()


# -- passwords ---------------------------------------------------------------------------------


# Argon2 takes 64 MiB and tens of milliseconds of CPU per call: it runs in a worker thread, so
# the event loop keeps serving everyone else, and at most this many at once, so a burst of
# logins costs a bounded amount of memory.
_HASHING = threading.BoundedSemaphore(4)


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
    """SHA-256 of a high-entropy secret: enough for random keys, and fast on the ingest path."""
    return hashlib.sha256(value.encode()).hexdigest()
