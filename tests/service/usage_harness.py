"""The usage consumer over the real embedded stores and bus, with one meter: what the tests of
the usage consumer and of the consumers of its `usage-events` start from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.events import USAGE_EVENTS, Reading, readings_recorded
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import Granularity
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.usage.consumer import UsageConsumer
from energy_tracker.services.users.store import UserStore
from tests.households import own_household

MIN = 60_000


@dataclass
class Harness:
    consumer: UsageConsumer
    series: SqliteSeriesStore
    bus: EmbeddedBus
    device_id: str
    offset: int = 0

    async def deliver(self, readings: list[Reading]) -> None:
        """Hand the consumer one message per call, as the bus would."""
        key, value = readings_recorded(self.device_id, readings)
        self.offset += 1
        message = Message("energy-readings", 0, self.offset, key, value)
        assert await self.consumer.handle([message]) == []

    async def energy_wh(self, granularity: Granularity, start: int, end: int) -> list[float]:
        buckets = await self.series.buckets([self.device_id], granularity, start, end)
        return [round(b.energy_wh, 6) for b in buckets]

    async def usage_events(self) -> list[dict]:
        consumer = await self.bus.subscribe(USAGE_EVENTS, "test-reader")
        try:
            return [orjson.loads(m.value)["data"] for m in await consumer.poll(10_000, 0.2)]
        finally:
            await consumer.close()


async def usage_harness(
    tmp_path: Path, timezone: str, tariff: dict | None = None
) -> AsyncIterator[Harness]:
    """A meter of a household in `timezone`, the real usage consumer, the embedded stores and
    bus in `tmp_path`."""
    db = Database(f"sqlite:///{tmp_path}/meta.db")
    series = SqliteSeriesStore(str(tmp_path / "series.db"))
    bus = EmbeddedBus(str(tmp_path / "bus.db"))
    await db.start()
    await db.migrate()
    await series.start()
    await series.migrate()
    await bus.start()
    await bus.ensure_topics(["energy-readings", USAGE_EVENTS])
    user = await UserStore(db).create("owner@example.com", "x", None)
    await own_household(db, user.id, timezone=timezone, tariff=tariff)
    device = await DeviceStore(db).create(user.id, "meter", "meter", "0" * 64)
    try:
        yield Harness(UsageConsumer(bus, series, DeviceStore(db), 15 * MIN), series, bus, device.id)
    finally:
        await bus.stop()
        await series.stop()
        await db.stop()
