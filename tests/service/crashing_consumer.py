"""A real usage consumer process that kills itself (SIGKILL) at a chosen point of a chosen batch.

Run by test_consumer_crash.py as `python -m tests.service.crashing_consumer DIR POINT N`:
it consumes `energy-readings` (group `usage`) from the embedded bus in DIR four messages at a
time, and on its N-th bucket write dies either just before writing the buckets (raw readings
stored, usage events published) or just after (nothing committed). The kill is real; only its
moment is chosen, so the test needs no luck to land inside a batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.bus.runner import ConsumeLoop
from energy_tracker.core.events import ENERGY_READINGS
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import Bucket
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.usage.consumer import GROUP, UsageConsumer

BATCH = 4
SESSION_TIMEOUT_S = 2.0
MAX_GAP_MS = 15 * 60_000


class DyingStore(SqliteSeriesStore):
    """The real SQLite store, which kills its process around its `die_at`-th bucket write."""

    def __init__(self, path: Path, point: str, die_at: int) -> None:
        super().__init__(path)
        self.point = point
        self.die_at = die_at
        self.writes = 0

    async def put_buckets(self, buckets: Sequence[Bucket]) -> None:
        self.writes += 1
        if self.writes == self.die_at and self.point == "before-buckets":
            os.kill(os.getpid(), signal.SIGKILL)
        await super().put_buckets(buckets)
        if self.writes == self.die_at and self.point == "before-commit":
            os.kill(os.getpid(), signal.SIGKILL)


async def main(data: Path, point: str, die_at: int) -> None:
    db = Database(f"sqlite:///{data}/meta.db")
    series = DyingStore(data / "series.db", point, die_at)
    bus = EmbeddedBus(str(data / "bus.db"), session_timeout_s=SESSION_TIMEOUT_S)
    await db.start()
    await series.start()
    await bus.start()
    consumer = UsageConsumer(bus, series, DeviceStore(db), MAX_GAP_MS)
    loop = ConsumeLoop(bus, ENERGY_READINGS, GROUP, consumer.handle, max_records=BATCH)
    await loop.run()  # never returns: the store kills the process


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
