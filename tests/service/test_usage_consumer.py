"""The usage consumer over the real embedded stores and bus: late, shuffled, duplicated and
replayed readings all end in the buckets the data calls for. Expected values by hand."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.events import USAGE_EVENTS, Reading, readings_recorded
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import Granularity
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.usage.consumer import UsageConsumer
from energy_tracker.services.users.store import UserStore

MIN = 60_000
HOUR = 60 * MIN


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


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


async def _harness(tmp_path: Path, timezone: str) -> AsyncIterator[Harness]:
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
    await UserStore(db).update(user.id, timezone=timezone)
    device = await DeviceStore(db).create(user.id, "meter", "meter", "0" * 64)
    try:
        yield Harness(UsageConsumer(bus, series, DeviceStore(db), 15 * MIN), series, bus, device.id)
    finally:
        await bus.stop()
        await series.stop()
        await db.stop()


@pytest.fixture
async def utc(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(tmp_path, "UTC"):
        yield h


@pytest.fixture
async def berlin(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(tmp_path, "Europe/Berlin"):
        yield h


def steady(device: str, start: int, end: int, step: int, watts: float) -> list[Reading]:
    return [Reading(device, t, power_w=watts) for t in range(start, end + 1, step)]


async def test_late_reading_corrects_a_published_hour(utc: Harness) -> None:
    # 1,000 W every 10 min from 10:00 to 11:00, but 10:30 is missing: the 20-minute hole is a
    # gap longer than 15 min, so the hour holds 40 min x 1 kW = 666.667 Wh. When 10:30 arrives
    # late, the hour becomes 1 kW x 1 h = 1,000 Wh, in a new version of the bucket.
    h = ms("2026-03-02T10:00:00+00:00")
    first = [
        r for r in steady(utc.device_id, h, h + HOUR, 10 * MIN, 1000.0) if r.ts != h + 30 * MIN
    ]
    await utc.deliver(first)
    assert await utc.energy_wh(Granularity.HOUR, h, h + 1) == [666.666667]
    await utc.deliver([Reading(utc.device_id, h + 30 * MIN, power_w=1000.0)])
    assert await utc.energy_wh(Granularity.HOUR, h, h + 1) == [1000.0]
    hours = [
        e
        for e in await utc.usage_events()
        if e["granularity"] == "hour" and e["period_start_ms"] == h
    ]
    assert [(round(e["energy_kwh"], 6), e["version"]) for e in hours] == [(0.666667, 1), (1.0, 2)]


async def test_duplicates_and_replays_change_nothing(utc: Harness) -> None:
    # 600 W every minute for 30 min: 0.6 kW x 0.5 h = 300 Wh, 150 Wh a quarter.
    q = ms("2026-03-02T10:00:00+00:00")
    batch = steady(utc.device_id, q, q + 30 * MIN, MIN, 600.0)
    await utc.deliver(batch)
    events_once = len(await utc.usage_events())
    await utc.deliver(batch)  # the same message again, as after a crash before the commit
    await utc.deliver(batch[5:9] + batch[5:9])  # duplicates inside a message
    assert len(await utc.usage_events()) == events_once
    assert await utc.energy_wh(Granularity.QUARTER, q, q + 30 * MIN) == [150.0, 150.0]
    (hour,) = await utc.series.buckets([utc.device_id], Granularity.HOUR, q, q + 1)
    assert (hour.samples, hour.version) == (31, 1)


async def test_a_shuffled_day_gives_the_in_order_day(utc: Harness) -> None:
    # 250 W every 5 minutes over one whole UTC day (and the next midnight): 0.25 kW x 24 h
    # = 6,000 Wh in the day, 250 Wh in every hour.
    day = ms("2026-05-10T00:00:00+00:00")
    readings = steady(utc.device_id, day, day + 24 * HOUR, 5 * MIN, 250.0)
    random.Random(7).shuffle(readings)
    for i in range(0, len(readings), 17):
        await utc.deliver(readings[i : i + 17])
    assert await utc.energy_wh(Granularity.DAY, day, day + 1) == [6000.0]
    assert await utc.energy_wh(Granularity.HOUR, day, day + 24 * HOUR) == [250.0] * 24


@pytest.mark.parametrize(
    ("local_day", "next_day", "expected_wh"),
    [
        # Spring forward: the day has 23 hours, 100 W all day is 2,300 Wh.
        ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 2300.0),
        # Fall back: 25 hours, 2,500 Wh.
        ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 2500.0),
    ],
)
async def test_berlin_dst_days(
    berlin: Harness, local_day: str, next_day: str, expected_wh: float
) -> None:
    start, end = ms(local_day), ms(next_day)
    await berlin.deliver(steady(berlin.device_id, start - HOUR, end + HOUR, 10 * MIN, 100.0))
    days = await berlin.energy_wh(Granularity.DAY, start - 25 * HOUR, end + 1)
    # The day before and after are partly covered (1 h each: 100 Wh); the DST day in full.
    assert days == [100.0, expected_wh, 100.0]
