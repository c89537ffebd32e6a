"""The device directory: what the services ask about devices and their households.

A port, so that ingestion, usage, alerts and insights need not import the devices service:
the composition root injects the devices store, which implements it over the shared metadata
database. Beside `http.IdentityDirectory`, which answers the same store for authentication.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from energy_tracker.core.consumption import DEFAULT_ROLE, Placement, Role


@dataclass(frozen=True)
class DeviceContext:
    """What bucketing and pricing a device's readings needs, resolved against its household."""

    device_id: str
    owner_id: str  # the account that registered it
    name: str
    timezone: str  # the device's own zone, else its household's
    currency: str  # the household's
    tariff: dict[str, Any] | None  # the household's
    # The device is not disabled and its household still has an owner whose account is enabled:
    # a device belongs to its household, so disabling the member who registered it changes
    # nothing, while a household left with no active owner stops sending readings.
    enabled: bool
    household_id: str
    role: Role = DEFAULT_ROLE  # what it measures in its household (core.consumption)
    parent_id: str | None = None  # the device a sub-meter sits inside

    @property
    def placement(self) -> Placement:
        """Its place in its household's consumption formula."""
        return Placement(self.device_id, self.role, self.parent_id)


@dataclass(frozen=True)
class HouseholdProfile:
    """The settings of a household that reports over all its devices need."""

    household_id: str
    name: str
    timezone: str
    currency: str
    country: str | None = None


class DeviceDirectory(Protocol):
    """Device look-ups every service may make; the devices store implements them."""

    async def contexts(self, device_ids: Collection[str]) -> dict[str, DeviceContext]:
        """The context of each known device, in one query; unknown ids are simply absent."""
        ...

    async def in_households(self, household_ids: Collection[str]) -> list[DeviceContext]:
        """The contexts of all the devices of these households, oldest first."""
        ...

    async def ids_by_meta(self, key: str, value: str) -> list[str]:
        """Ids of the devices whose metadata maps `key` to the string `value`, oldest first."""
        ...

    async def household_profiles(
        self, household_ids: Collection[str]
    ) -> dict[str, HouseholdProfile]:
        """Name, zone and currency of each of these households that exists."""
        ...


_generation = 0


def directory_changed() -> None:
    """Called by the stores after a write that changes what the directory answers (a device
    created, changed or deleted; a household's settings or members changed): every
    `DirectoryCache` of this process forgets what it remembered before its next answer."""
    global _generation
    _generation += 1


DIRECTORY_TTL_S = 5.0
"""How long a `DirectoryCache` answer is reused: how late a change made in another process
arrives (the same bound as `core.credentials.CREDENTIAL_TTL_S`)."""
MAX_CACHED_ANSWERS = 10_000


class DirectoryCache:
    """A `DeviceDirectory` for read routes, remembering whole households for `ttl_s` at most.

    Why: every usage query looked up its device's context, or its household's devices and
    profile, in the metadata database: a transaction of several thread hops each time, the
    larger part of a query's cost once the buckets are read in one statement, and each hop a
    wait behind whatever else the event loop runs (ingestion, consumers).

    How it stays right: a device's household never changes, so a device found in a
    remembered household is that household's; a device not found there is looked up, and its
    household is then remembered whole, so the next question about any device of it is
    answered here. In this process every write that changes an answer calls
    `directory_changed` and the cache starts again empty; a change made through another
    process (split deployments) arrives within `ttl_s`. Answers
    are keyed by the exact households asked for, so their order is the source's. Bounded:
    when full, it starts again empty. Not for deciding whether a device may send readings:
    `enabled` follows its owners' accounts, whose changes do not reset it.
    """

    def __init__(
        self,
        source: DeviceDirectory,
        ttl_s: float = DIRECTORY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self.clock = clock
        self._generation = _generation
        self._members: dict[tuple[str, ...], tuple[float, list[DeviceContext]]] = {}
        self._profiles: dict[str, tuple[float, HouseholdProfile | None]] = {}
        self._devices: dict[str, tuple[float, DeviceContext]] = {}

    def _fresh(self) -> float:
        """Now, after forgetting everything if this process changed the directory since."""
        if self._generation != _generation:
            self._generation = _generation
            self.forget()
        return self.clock()

    def forget(self) -> None:
        """Drop every remembered answer."""
        self._members.clear()
        self._profiles.clear()
        self._devices.clear()

    async def contexts(self, device_ids: Collection[str]) -> dict[str, DeviceContext]:
        """Remembered contexts, the others looked up (and their households remembered)."""
        now = self._fresh()
        out: dict[str, DeviceContext] = {}
        missing = []
        for device_id in device_ids:
            hit = self._devices.get(device_id)
            if hit is not None and hit[0] > now:
                out[device_id] = hit[1]
            else:
                missing.append(device_id)
        if missing:
            found = await self.source.contexts(missing)
            households = sorted({ctx.household_id for ctx in found.values()})
            await self.in_households(households)  # their other devices, for the next question
            out.update(found)
        return out

    async def in_households(self, household_ids: Collection[str]) -> list[DeviceContext]:
        """The source's answer for exactly these households, remembered."""
        now = self._fresh()
        key = tuple(sorted(set(household_ids)))
        hit = self._members.get(key)
        if hit is not None and hit[0] > now:
            return list(hit[1])
        generation = _generation
        found = await self.source.in_households(key)
        if generation != _generation:  # changed while it was read: not to be remembered
            return found
        if len(self._devices) + len(found) > MAX_CACHED_ANSWERS:
            self.forget()
        expires = now + self.ttl_s
        self._members[key] = (expires, found)
        for ctx in found:
            self._devices[ctx.device_id] = (expires, ctx)
        return list(found)

    async def household_profiles(
        self, household_ids: Collection[str]
    ) -> dict[str, HouseholdProfile]:
        """Remembered profiles (and absences), the others looked up."""
        now = self._fresh()
        out: dict[str, HouseholdProfile] = {}
        missing = []
        for household_id in household_ids:
            hit = self._profiles.get(household_id)
            if hit is not None and hit[0] > now:
                if hit[1] is not None:
                    out[household_id] = hit[1]
            else:
                missing.append(household_id)
        if missing:
            generation = _generation
            found = await self.source.household_profiles(missing)
            if generation != _generation:
                return out | found
            if len(self._profiles) + len(missing) > MAX_CACHED_ANSWERS:
                self.forget()
            expires = now + self.ttl_s
            for household_id in missing:
                self._profiles[household_id] = (expires, found.get(household_id))
            out.update(found)
        return out

    async def ids_by_meta(self, key: str, value: str) -> list[str]:
        """Not remembered: the source's answer."""
        return await self.source.ids_by_meta(key, value)
