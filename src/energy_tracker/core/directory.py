"""The device directory: what the services ask about devices and their owners.

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
    """What bucketing and pricing a device's readings needs, resolved against its owner."""

    device_id: str
    owner_id: str
    name: str
    timezone: str  # the device's own zone, else its owner's
    currency: str  # the owner's
    tariff: dict[str, Any] | None  # the owner's
    enabled: bool  # neither the device nor its owner is disabled
    role: Role = DEFAULT_ROLE  # what it measures in its home (core.consumption)
    parent_id: str | None = None  # the device a sub-meter sits inside

    @property
    def placement(self) -> Placement:
        """Its place in its home's consumption formula."""
        return Placement(self.device_id, self.role, self.parent_id)


@dataclass(frozen=True)
class OwnerProfile:
    """The settings of a device owner that reports over all their devices need."""

    owner_id: str
    timezone: str
    currency: str


class DeviceDirectory(Protocol):
    """Device look-ups every service may make; the devices store implements them."""

    async def contexts(self, device_ids: Collection[str]) -> dict[str, DeviceContext]:
        """The context of each known device, in one query; unknown ids are simply absent."""
        ...

    async def owned_by(self, owner_id: str) -> list[DeviceContext]:
        """The contexts of all of an owner's devices, oldest first, however many there are."""
        ...

    async def ids_by_meta(self, key: str, value: str) -> list[str]:
        """Ids of the devices whose metadata maps `key` to the string `value`, oldest first."""
        ...

    async def owner_profile(self, owner_id: str) -> OwnerProfile | None:
        """The owner's zone and currency; None when there is no such user."""
        ...
