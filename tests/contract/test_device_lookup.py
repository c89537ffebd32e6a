"""DeviceStore.ids_by_meta, the lookup MQTT ingestion maps a Tasmota topic with, on every
metadata backend: SQLite, MariaDB and PostgreSQL compare a JSON path each in their own way."""

from __future__ import annotations

from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.store import UserStore


async def test_ids_by_a_metadata_value(metadata_db: Database) -> None:
    owner = await UserStore(metadata_db).create("owner@example.com", "x")
    devices = DeviceStore(metadata_db)
    plug = await devices.create(owner.id, "plug", "plug", "a" * 64, meta={"tasmota_topic": "p1"})
    await devices.create(owner.id, "other", "plug", "b" * 64, meta={"tasmota_topic": "p10"})
    await devices.create(owner.id, "number", "plug", "c" * 64, meta={"tasmota_topic": 7})
    await devices.create(owner.id, "nested", "plug", "d" * 64, meta={"x": {"tasmota_topic": "p1"}})
    await devices.create(owner.id, "bare", "plug", "e" * 64)
    assert await devices.ids_by_meta("tasmota_topic", "p1") == [plug.id]
    assert await devices.ids_by_meta("tasmota_topic", "nope") == []
    assert await devices.ids_by_meta("tasmota_topic", "P1") == []  # names are case-sensitive
    twin = await devices.create(owner.id, "twin", "plug", "f" * 64, meta={"tasmota_topic": "p1"})
    assert await devices.ids_by_meta("tasmota_topic", "p1") == [plug.id, twin.id]
