"""Look-ups on every metadata backend: DeviceStore.ids_by_meta, which MQTT ingestion maps a
Tasmota topic with (SQLite, MariaDB and PostgreSQL compare a JSON path each in their own way);
the device keys and the credential change counter authentication reads."""

from __future__ import annotations

import asyncio

from energy_tracker.core.stores.credential_changes import CredentialChanges
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


async def test_contexts_by_key_hash(metadata_db: Database) -> None:
    """Authentication's look-up of many new device keys at once: the context of each digest's
    device, unknown digests absent; a disabled device is there, not enabled."""
    owner = await UserStore(metadata_db).create("owner@example.com", "x")
    devices = DeviceStore(metadata_db)
    plug = await devices.create(owner.id, "plug", "plug", "a" * 64)
    meter = await devices.create(owner.id, "meter", "meter", "b" * 64)
    await devices.update(meter.id, disabled=True)
    found = await devices.contexts_by_key_hash(["a" * 64, "b" * 64, "c" * 64])
    assert sorted(found) == ["a" * 64, "b" * 64]
    assert (found["a" * 64].device_id, found["a" * 64].owner_id) == (plug.id, owner.id)
    assert found["a" * 64].enabled and not found["b" * 64].enabled
    assert await devices.contexts_by_key_hash([]) == {}


async def test_the_credential_change_counter(metadata_db: Database) -> None:
    """Starts at 0 (the migration's row); each bump gives the next value, concurrent ones
    each their own."""
    changes = CredentialChanges(metadata_db)
    assert await changes.version() == 0
    assert await changes.bump() == 1
    assert sorted(await asyncio.gather(*(changes.bump() for _ in range(3)))) == [2, 3, 4]
    assert await changes.version() == 4
