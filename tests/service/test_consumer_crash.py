"""A usage consumer killed (SIGKILL) in the middle of a batch, then replaced: the replacement gets
the uncommitted batch again, and every bucket ends exactly as if each message had come once and
in order; the last usage event of every bucket says what the bucket holds, so no update is lost."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest

from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.bus.runner import ConsumeLoop
from energy_tracker.core.events import ENERGY_READINGS, USAGE_EVENTS, Reading, readings_recorded
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import Granularity
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.usage.consumer import GROUP, UsageConsumer
from energy_tracker.services.users.store import UserStore
from tests.households import own_household
from tests.service.crashing_consumer import BATCH, MAX_GAP_MS, SESSION_TIMEOUT_S

MIN = 60_000
DAY_START = 1_785_016_800_000  # 2026-07-26T00:00:00+02:00, a Berlin summer day
MESSAGES = 30


def day_of_readings(device_id: str) -> list[list[Reading]]:
    """A day and a bit, one reading a minute with varying power, cut into MESSAGES messages."""
    readings = [
        Reading(device_id, DAY_START + i * MIN, power_w=float(100 + (i * 37) % 900))
        for i in range(24 * 60 + 30)
    ]
    size = -(-len(readings) // MESSAGES)
    return [readings[i : i + size] for i in range(0, len(readings), size)]


async def make_stores(data: Path) -> tuple[Database, SqliteSeriesStore, EmbeddedBus, str]:
    db = Database(f"sqlite:///{data}/meta.db")
    series = SqliteSeriesStore(data / "series.db")
    bus = EmbeddedBus(str(data / "bus.db"), session_timeout_s=SESSION_TIMEOUT_S)
    await db.start()
    await db.migrate()
    await series.start()
    await series.migrate()
    await bus.start()
    await bus.ensure_topics([ENERGY_READINGS, USAGE_EVENTS])
    users, devices = UserStore(db), DeviceStore(db)
    user = await users.create(f"owner-{data.name}@example.com", "x")
    await own_household(
        db, user.id, timezone="Europe/Berlin", tariff={"type": "flat", "price_per_kwh": 0.3}
    )
    return db, series, bus, (await devices.create(user.id, "meter", "meter", "0" * 64)).id


async def snapshot(series: SqliteSeriesStore, device_id: str) -> dict[tuple[str, int], tuple]:
    """Every bucket's values, versions aside."""
    out = {}
    for granularity in Granularity:
        for b in await series.buckets([device_id], granularity, 0, 2**62):
            out[(str(granularity), b.start)] = (
                round(b.energy_wh, 6),
                round(b.cost, 9),
                b.samples,
                b.power_samples,
                round(b.power_sum_w, 6),
                b.min_power_w,
                b.max_power_w,
            )
    return out


async def in_order_reference(tmp_path: Path) -> dict[tuple[str, int], tuple]:
    """The buckets when every message is handled once, in order, by a consumer that never dies."""
    data = tmp_path / "reference"
    db, series, bus, device_id = await make_stores(data)
    try:
        consumer = UsageConsumer(bus, series, DeviceStore(db), MAX_GAP_MS)
        for offset, readings in enumerate(day_of_readings(device_id)):
            key, value = readings_recorded(device_id, readings)
            assert await consumer.handle([Message(ENERGY_READINGS, 0, offset, key, value)]) == []
        return await snapshot(series, device_id)
    finally:
        await bus.stop()
        await series.stop()
        await db.stop()


@pytest.mark.parametrize("point", ["before-buckets", "before-commit"])
async def test_killed_mid_batch_then_replaced(tmp_path: Path, point: str) -> None:
    expected = await in_order_reference(tmp_path)
    data = tmp_path / "crash"
    db, series, bus, device_id = await make_stores(data)
    try:
        await bus.publish(
            ENERGY_READINGS, [readings_recorded(device_id, rs) for rs in day_of_readings(device_id)]
        )
        # The third batch of four messages: readings of 8 messages are stored and committed,
        # those of the next 4 are stored (and, before-commit, bucketed) but not committed.
        dying = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.service.crashing_consumer", str(data), point, "3"
        )
        try:
            returncode = await asyncio.wait_for(dying.wait(), 120)
        finally:
            if dying.returncode is None:
                dying.kill()
                await dying.wait()
        assert returncode == -signal.SIGKILL
        stored = await series.readings_page(device_id, 0, 2**62, None, 10_000)
        assert 0 < len(stored) < sum(len(rs) for rs in day_of_readings(device_id))

        # The replacement joins group `usage`, takes the partition once the dead member's
        # session has expired, and starts again at the last commit.
        consumer = UsageConsumer(bus, series, DeviceStore(db), MAX_GAP_MS)
        loop = ConsumeLoop(bus, ENERGY_READINGS, GROUP, consumer.handle, max_records=BATCH)
        task = asyncio.create_task(loop.run())
        got: dict = {}
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                got = await snapshot(series, device_id)
                if got == expected:
                    break
                await asyncio.sleep(0.5)
        finally:
            loop.stop()
            await asyncio.wait_for(task, 30)
        assert got == expected  # keyed by (granularity, period start): the same in both runs

        # The newest usage event of every bucket carries the bucket's final energy.
        reader = await bus.subscribe(USAGE_EVENTS, "test-reader")
        latest: dict[tuple[str, int], dict] = {}
        try:
            while batch := await reader.poll(10_000, 1.0):
                for m in batch:
                    e = orjson.loads(m.value)["data"]
                    key = (e["granularity"], e["period_start_ms"])
                    if key not in latest or e["version"] >= latest[key]["version"]:
                        latest[key] = e
        finally:
            await reader.close()
        final = {k: values[0] for k, values in got.items()}
        assert {k: round(e["energy_kwh"] * 1000, 6) for k, e in latest.items()} == final
    finally:
        await bus.stop()
        await series.stop()
        await db.stop()
