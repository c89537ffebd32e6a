"""DeviceStore.ids_by_meta, the lookup MQTT ingestion maps a Tasmota topic with, on every
metadata backend: SQLite, MariaDB and PostgreSQL compare a JSON path each in their own way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.store import UserStore


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mysql),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/meta.db"
    url: str = request.getfixturevalue(
        "mysql_url" if request.param == "mariadb" else "postgres_url"
    )
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.start()
    try:
        await database.migrate()
        yield database
    finally:
        await database.stop()


async def test_ids_by_a_metadata_value(db: Database) -> None:
    owner = await UserStore(db).create("owner@example.com", "x")
    devices = DeviceStore(db)
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
