"""The usage consumer's loop while its store is away: the batch waits, uncommitted, and lands
once the store is back; nothing goes to the DLQ. (It used to: any database error but a refused
connection dead-lettered the batch and committed it, so accepted readings never reached a
bucket.) The store is the real embedded SQLite one, made unavailable by another connection
holding its write lock longer than its busy timeout."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from energy_tracker.core.bus.runner import dlq_topic
from energy_tracker.core.events import ENERGY_READINGS, Reading, readings_recorded
from energy_tracker.core.stores.timeseries.base import Granularity
from tests.service.usage_harness import usage_harness

HOUR = 3_600_000


async def test_a_locked_store_is_waited_out_not_dead_lettered(tmp_path: Path) -> None:
    async for h in usage_harness(tmp_path, "UTC"):
        loop = h.consumer.loop()
        loop.retry_pause_s = 0.2
        # 1 kW every 10 min over an hour: 1,000 Wh in that hour.
        start = 1_767_225_600_000
        readings = [Reading(h.device_id, start + i * 600_000, power_w=1000.0) for i in range(7)]
        lock = sqlite3.connect(tmp_path / "series.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        task = asyncio.create_task(loop.run())
        try:
            await h.bus.publish(ENERGY_READINGS, [readings_recorded(h.device_id, readings)])
            # Longer than two tries of the store (5 s busy timeout each): the batch and then its
            # one-by-one retry fail, where the one-by-one retry used to dead-letter the message.
            await asyncio.sleep(12)
            lock.execute("ROLLBACK")
            for _ in range(300):
                if await h.energy_wh(Granularity.HOUR, start, start + 1):
                    break
                await asyncio.sleep(0.1)
            assert await h.energy_wh(Granularity.HOUR, start, start + 1) == [1000.0]
            probe = await h.bus.subscribe(dlq_topic(ENERGY_READINGS), "probe")
            try:
                assert await probe.poll(100, 0.5) == []
            finally:
                await probe.close()
        finally:
            lock.close()
            loop.stop()
            await task
