"""core.directory.DirectoryCache in front of the real devices store (SQLite metadata): what
the usage routes read their devices' contexts through. A change made through this process's
stores is seen at once; one made by another process (written here straight into the database,
as another process's store would) within the TTL, never later; one device's look-up remembers
its whole household."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest
from sqlalchemy import update

from energy_tracker.core.directory import DeviceContext, DirectoryCache
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import devices as devices_table
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.household_store import HouseholdStore
from energy_tracker.services.users.store import UserStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/meta.db")
    await database.start()
    await database.migrate()
    try:
        yield database
    finally:
        await database.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(DeviceStore):
    """The real store, counting the look-ups that reach the database."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lookups = 0

    async def contexts(self, device_ids: Collection[str]) -> dict[str, DeviceContext]:
        self.lookups += 1
        return await super().contexts(device_ids)

    async def in_households(self, household_ids: Collection[str]) -> list[DeviceContext]:
        self.lookups += 1
        return await super().in_households(household_ids)


async def test_a_household_is_remembered_and_changes_arrive(db: Database) -> None:
    owner = await UserStore(db).create("owner@example.com", "x")
    store = CountingStore(db)
    meter = await store.create(owner.id, "meter", "meter", "a" * 64, role="grid")
    plug = await store.create(owner.id, "plug", "plug", "b" * 64)
    home = meter.household_id
    clock = Clock()
    cache = DirectoryCache(store, ttl_s=5.0, clock=clock)

    # One device asked for: its household's devices come along, so the other is remembered.
    assert (await cache.contexts([meter.id]))[meter.id].role == "grid"
    asked = store.lookups
    assert (await cache.contexts([plug.id]))[plug.id].name == "plug"
    assert [c.device_id for c in await cache.in_households([home])] == [meter.id, plug.id]
    assert store.lookups == asked

    # A change through this process's stores: seen on the very next question.
    await store.update(plug.id, timezone="Asia/Tokyo")
    assert (await cache.contexts([plug.id]))[plug.id].timezone == "Asia/Tokyo"
    kettle = await store.create(owner.id, "kettle", "plug", "c" * 64)
    assert [c.device_id for c in await cache.in_households([home])] == [
        meter.id,
        plug.id,
        kettle.id,
    ]
    await HouseholdStore(db).update(home, timezone="America/Chicago", name="Cabin")
    assert (await cache.household_profiles([home]))[home].timezone == "America/Chicago"
    await store.delete(kettle.id)
    assert kettle.id not in await cache.contexts([kettle.id])

    # A change another process made (straight into the database): the remembered answer
    # stands until the TTL runs out, then the new one is read.
    await cache.contexts([plug.id])
    async with db.begin() as conn:
        await conn.execute(
            update(devices_table).where(devices_table.c.id == plug.id).values(name="fridge")
        )
    clock.now += 4.9
    assert (await cache.contexts([plug.id]))[plug.id].name == "plug"
    clock.now += 0.2
    assert (await cache.contexts([plug.id]))[plug.id].name == "fridge"


async def test_unknown_devices_and_households_are_absent(db: Database) -> None:
    owner = await UserStore(db).create("owner@example.com", "x")
    store = DeviceStore(db)
    meter = await store.create(owner.id, "meter", "meter", "a" * 64)
    cache = DirectoryCache(store)
    assert await cache.contexts(["nope", meter.id]) == {meter.id: await _context(store, meter.id)}
    assert await cache.household_profiles(["nope"]) == {}
    assert await cache.household_profiles(["nope"]) == {}  # remembered as absent
    assert await cache.in_households(["nope"]) == []


async def _context(store: DeviceStore, device_id: str) -> DeviceContext:
    return (await store.contexts([device_id]))[device_id]
