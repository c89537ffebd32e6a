"""A cache in front of the identity look-ups every authenticated request makes, kept right by a
change counter in the metadata database.

It also keeps a personal access token's "last used" from costing a write per request.

Why: without it every request pays one or two metadata-database transactions (a user's current
role, or a device key's device and owner) before it does anything, several milliseconds each on
SQLite, which caps the whole API near a hundred requests a second. A short-lived cache (it was
5 s) does not help the live workload: 10,000 devices each sending every 10 s come back after
the entry has gone. The answers change only when an account, a household's members, a device
or a token is changed, which is rare, so they are kept long and dropped when something changes.

How it stays right:
- Every route that changes what a look-up answers (a user disabled, enabled or given another
  role, or joining, leaving or changing role in a household; a device disabled, enabled,
  deleted or given a new key; a personal access token revoked) awaits `forget_user`,
  `forget_device` or `forget_token` after its change is committed and before it answers: that
  drops the entry here, so the change takes effect on the very next request in this process,
  and bumps the change counter (`IdentityDirectory.credentials_changed`).
- Every process reads the counter at most once every CHECK_EVERY_S (1 s), on the first request
  after that time (never while idle), and forgets every answer when it moved. So a change made
  in another process (split deployments, several HTTP processes) is refused here within 1 s.
  A stream checks its caller as it polls (`http.caller_gone`), so one opened before the
  revocation ends within the same bound.
- An answer is kept at most CREDENTIAL_TTL_S (10 min): a backstop for changes made around the
  API (SQL by hand), which do not move the counter.
- A look-up that was under way while answers were forgotten is not remembered (it may have
  read the store before the change).
- Refusals are cached too (an unknown key hammering the API costs one query per period), and
  the cache is bounded: when full, it starts again empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request

from energy_tracker.core.auth import AccessGrant
from energy_tracker.core.http import IdentityDirectory

T = TypeVar("T")

CREDENTIAL_TTL_S = 600.0
"""How long a look-up's answer is reused at most (changes through the API arrive much sooner)."""
CHECK_EVERY_S = 1.0
"""How often, at most, a busy process reads the change counter: how late a change made in
another process arrives here."""
MAX_ENTRIES = 100_000
KEYS_PER_QUERY = 500
"""The most device keys one look-up asks for."""
TOKEN_USE_RESOLUTION_S = 60.0
"""A personal access token's `last_used_at` is kept to this: at most one write per token per
process in this time, and none when another process recorded a use within it."""


class CredentialCache(IdentityDirectory):
    """An IdentityDirectory that remembers its source's answers until the change counter moves
    (read once a CHECK_EVERY_S), `forget_*` drops them, or CREDENTIAL_TTL_S has passed."""

    def __init__(
        self,
        source: IdentityDirectory,
        ttl_s: float = CREDENTIAL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self.clock = clock
        self.check_every_s = check_every_s
        self._roles: dict[str, tuple[float, str | None]] = {}
        self._keys: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self._households: dict[str, tuple[float, tuple[tuple[str, str], ...]]] = {}
        self._grants: dict[str, tuple[float, AccessGrant | None]] = {}
        self._used: dict[str, float] = {}  # token id -> when this process last recorded a use
        self._version: int | None = None  # the change counter these answers were read under
        self._next_check = float("-inf")
        self._checking: asyncio.Lock | None = None
        # Moves whenever answers are forgotten: a look-up that began before is not remembered.
        self._generation = 0
        # Key digests missed by requests: those the next query asks for, and those of the
        # query under way (with the generation it began in).
        self._asked: dict[str, asyncio.Future[tuple[str, str] | None]] = {}
        self._in_flight: dict[str, asyncio.Future[tuple[str, str] | None]] = {}
        self._in_flight_generation = -1
        self._looking_up: asyncio.Task[None] | None = None

    async def user_role(self, user_id: str) -> str | None:
        return await self._answer(self._roles, user_id, self.source.user_role)

    async def devices_for_key_digests(
        self, digests: Collection[str]
    ) -> dict[str, tuple[str, str] | None]:
        """The remembered answers, and the others looked up together with those every other
        request is missing meanwhile (`_look_up_keys`)."""
        now = self.clock()
        if now >= self._next_check:
            await self._check_counter()
        found: dict[str, tuple[str, str] | None] = {}
        missing: list[str] = []
        for digest in digests:
            hit = self._keys.get(digest)
            if hit is not None and hit[0] > now:
                found[digest] = hit[1]
            else:
                missing.append(digest)
        for digest in missing:
            found[digest] = await asyncio.shield(self._key_asked(digest))
        return found

    def _key_asked(self, digest: str) -> asyncio.Future[tuple[str, str] | None]:
        """The answer to come for `digest`: that of the look-up under way when it began after
        anything was last forgotten, else of the next one."""
        if self._in_flight_generation == self._generation and digest in self._in_flight:
            return self._in_flight[digest]
        answer = self._asked.get(digest)
        if answer is None:
            answer = self._asked[digest] = asyncio.get_running_loop().create_future()
            # Seen even when every caller gave up on it, so a failure is not reported twice.
            answer.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._looking_up is None:
            self._looking_up = asyncio.create_task(self._look_up_keys(), name="credential-keys")
        return answer

    async def _look_up_keys(self) -> None:
        """One query for every key digest asked while the previous query was under way (at
        most KEYS_PER_QUERY): under load, new devices cost a query per round, not per request.
        An idle request is not delayed: with nothing under way its digest is looked up at once."""
        try:
            while self._asked:
                digests = list(self._asked)[:KEYS_PER_QUERY]
                self._in_flight = {d: self._asked.pop(d) for d in digests}
                self._in_flight_generation = generation = self._generation
                now = self.clock()
                try:
                    found = await self.source.devices_for_key_digests(digests)
                except Exception as exc:
                    for answer in self._in_flight.values():
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                finally:
                    answers, self._in_flight = self._in_flight, {}
                if generation == self._generation:
                    for digest in digests:
                        _remember(self._keys, digest, (now + self.ttl_s, found.get(digest)))
                for digest, answer in answers.items():
                    if not answer.done():
                        answer.set_result(found.get(digest))
        finally:
            self._looking_up = None
            # Cancelled (the app is stopping): nobody may wait for a look-up that never comes.
            for answer in self._asked.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("stopped before the look-up"))
            self._asked = {}

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
        if now >= self._next_check:
            await self._check_counter()
        hit = entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        found = await look_up(key)
        if generation == self._generation:
            _remember(entries, key, (now + self.ttl_s, found))
        return found

    async def _check_counter(self) -> None:
        """Read the change counter (one caller at a time; the others wait for its answer) and
        forget everything when it moved since the answers were read."""
        if self._checking is None:
            self._checking = asyncio.Lock()
        async with self._checking:
            began = self.clock()
            if began < self._next_check:
                return  # another request read it while this one waited
            version = await self.source.credentials_version()
            if version != self._version:
                self._forget_all()
                self._version = version
            self._next_check = began + self.check_every_s

    async def credentials_version(self) -> int:
        return await self.source.credentials_version()

    async def credentials_changed(self) -> int:
        """Bump the counter; when nobody else moved it since it was read here, what is cached
        (the change's entries already forgotten) stays valid under the new value."""
        version = await self.source.credentials_changed()
        if self._version is not None and version == self._version + 1:
            self._version = version
        return version

    async def token_used(self, token_id: str, at: datetime) -> None:
        """Passes a use on to the source once per TOKEN_USE_RESOLUTION_S per token."""
        now = self.clock()
        last = self._used.get(token_id)
        if last is not None and now - last < TOKEN_USE_RESOLUTION_S:
            return
        _remember(self._used, token_id, now)
        await self.source.token_used(token_id, at)

    async def forget_token(self, token_id: str) -> None:
        """The token was revoked: the next request with it asks the store, here and (through
        the counter) in every other process."""
        self._generation += 1
        self._grants.pop(token_id, None)
        await self.credentials_changed()

    async def forget_user(self, user_id: str) -> None:
        """The account changed (disabled, enabled, role, a household joined or left, a role
        there): its role, its households and its devices' keys; everywhere, through the
        counter."""
        self._generation += 1
        self._roles.pop(user_id, None)
        self._households.pop(user_id, None)
        # An account disabled, enabled or changing roles may be its household's last active
        # owner: every device of those households changes (DeviceContext.enabled), whoever
        # registered it, so every key answer goes (account changes are rare).
        self._keys.clear()
        await self.credentials_changed()

    async def forget_device(self, device_id: str) -> None:
        """The device changed (disabled, enabled, deleted, new key): every key answer about it,
        and the cached refusals, one of which may be its new or re-enabled key; everywhere,
        through the counter."""
        self._generation += 1
        for digest in [d for d, v in self._keys.items() if v[1] is None or v[1][0] == device_id]:
            del self._keys[digest]
        await self.credentials_changed()

    def _forget_all(self) -> None:
        # In place: a look-up under way holds these very dicts.
        self._generation += 1
        for entries in (self._roles, self._keys, self._households, self._grants):
            entries.clear()


def _remember(entries: dict[str, Any], key: str, value: Any) -> None:
    if len(entries) >= MAX_ENTRIES:
        entries.clear()
    entries[key] = value


async def credentials(request: Request) -> CredentialCache:
    """FastAPI dependency: this process's credential cache, for routes that change credentials."""
    cache: CredentialCache = request.app.state.credentials
    return cache
