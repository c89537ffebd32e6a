"""The device directory: what the services ask about devices and their households.

A port, so that ingestion, usage, alerts and insights need not import the devices service:
the composition root injects the devices store, which implements it over the shared metadata
database. Beside `http.IdentityDirectory`, which answers the same store for authentication.
"""

from __future__ import annotations

from collections.abc import Collection
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
