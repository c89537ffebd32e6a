"""A short-lived cache in front of the identity look-ups every authenticated request makes.

It also keeps a personal access token's "last used" from costing a write per request.

Why: without it every request pays one or two metadata-database transactions (a user's current
role, or a device key's device and owner) before it does anything, several milliseconds each on
SQLite, which caps the whole API near a hundred requests a second. The answers change only when
an account or a device is changed, which is rare.

How it stays right:
- In this process, every route that changes what a look-up answers (a user disabled, enabled or
  given another role, or joining, leaving or changing role in a household; a device disabled,
  enabled, deleted or given a new key; a personal access token revoked) calls `forget_user`,
  `forget_device` or `forget_token` before it answers, so the change takes effect on the very
  next request here.
- Across processes (split deployments, several replicas) nothing is signalled: an entry lives at
  most `ttl_s` (CREDENTIAL_TTL_S, 5 s), so a change made through another process takes effect
  here within that. A revoked token is refused at once by the users service (which revoked
  it) and within 5 s by every other service and gateway: the same bound as a disabled account,
  with no broker to run for it. A stream checks its caller as it polls (`http.caller_gone`),
  so one opened before the revocation ends within the same bound.
- Refusals are cached too (an unknown key hammering the API costs one query per period), and
  the cache is bounded: when full, it starts again empty.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request

from energy_tracker.core.auth import AccessGrant
from energy_tracker.core.http import IdentityDirectory

T = TypeVar("T")

CREDENTIAL_TTL_S = 5.0
"""How long a look-up's answer is reused: how late a change made in another process arrives."""
MAX_ENTRIES = 100_000
TOKEN_USE_RESOLUTION_S = 60.0
"""A personal access token's `last_used_at` is kept to this: at most one write per token per
process in this time, and none when another process recorded a use within it."""


class CredentialCache(IdentityDirectory):
    """An IdentityDirectory that remembers its source's answers for `ttl_s` at most."""

    def __init__(
        self,
        source: IdentityDirectory,
        ttl_s: float = CREDENTIAL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self.clock = clock
        self._roles: dict[str, tuple[float, str | None]] = {}
        self._keys: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self._households: dict[str, tuple[float, tuple[tuple[str, str], ...]]] = {}
        self._grants: dict[str, tuple[float, AccessGrant | None]] = {}
        self._used: dict[str, float] = {}  # token id -> when this process last recorded a use

    async def user_role(self, user_id: str) -> str | None:
        return await self._answer(self._roles, user_id, self.source.user_role)

    async def device_for_key_digest(self, digest: str) -> tuple[str, str] | None:
        return await self._answer(self._keys, digest, self.source.device_for_key_digest)

    async def memberships(self, user_id: str) -> tuple[tuple[str, str], ...]:
        return await self._answer(self._households, user_id, self.source.memberships)

    async def access_grant(self, token_id: str) -> AccessGrant | None:
        return await self._answer(self._grants, token_id, self.source.access_grant)

    async def _answer(
        self,
        entries: dict[str, tuple[float, T]],
        key: str,
        look_up: Callable[[str], Awaitable[T]],
    ) -> T:
        """The remembered answer for `key` while it is fresh, else `look_up`'s, remembered."""
        now = self.clock()
        hit = entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await look_up(key)
        _remember(entries, key, (now + self.ttl_s, found))
        return found

    async def token_used(self, token_id: str, at: datetime) -> None:
        """Passes a use on to the source once per TOKEN_USE_RESOLUTION_S per token."""
        now = self.clock()
        last = self._used.get(token_id)
        if last is not None and now - last < TOKEN_USE_RESOLUTION_S:
            return
        _remember(self._used, token_id, now)
        await self.source.token_used(token_id, at)

    def forget_token(self, token_id: str) -> None:
        """The token was revoked: the next request with it asks the store."""
        self._grants.pop(token_id, None)

    def forget_user(self, user_id: str) -> None:
        """The account changed (disabled, enabled, role, a household joined or left, a role
        there): its role, its households and its devices' keys."""
        self._roles.pop(user_id, None)
        self._households.pop(user_id, None)
        # An account disabled, enabled or changing roles may be its household's last active
        # owner: every device of those households changes (DeviceContext.enabled), whoever
        # registered it, so every key answer goes (account changes are rare).
        self._keys = {}

    def forget_device(self, device_id: str) -> None:
        """The device changed (disabled, enabled, deleted, new key): every key answer about it,
        and the cached refusals, one of which may be its new or re-enabled key."""
        self._keys = {
            d: v for d, v in self._keys.items() if v[1] is not None and v[1][0] != device_id
        }


def _remember(entries: dict[str, Any], key: str, value: Any) -> None:
    if len(entries) >= MAX_ENTRIES:
        entries.clear()
    entries[key] = value


def credentials(request: Request) -> CredentialCache:
    """FastAPI dependency: this process's credential cache, for routes that change credentials."""
    cache: CredentialCache = request.app.state.credentials
    return cache
