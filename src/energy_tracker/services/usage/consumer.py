"""The usage consumer: `energy-readings` in (group `usage`), raw series and buckets stored,
`usage-events` out for every bucket that changed."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from prometheus_client import Histogram

from energy_tracker.core.bus.base import EventBus, Message
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.events import (
    ENERGY_READINGS,
    USAGE_EVENTS,
    MalformedEvent,
    Reading,
    parse_readings_recorded,
    usage_updated,
)
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.services.usage.live import StoredReadings
from energy_tracker.services.usage.rollups import DeviceReadings, Rollups

log = logging.getLogger(__name__)
GROUP = "usage"
# Readings older than this when they arrive are history (a backfill, a replay): their delay says
# nothing about the pipeline, so they are left out of the latency histogram.
LIVE_MS = 15 * 60 * 1000
CHUNK_READINGS = 5_000
"""Readings stored and bucketed together (`UsageConsumer.handle`)."""
BUCKET_LATENCY = Histogram(
    "et_usage_bucket_latency_seconds",
    "From a live reading's timestamp to its buckets stored (each device batch's newest reading)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


class UsageConsumer:
    def __init__(
        self,
        bus: EventBus,
        series: SeriesStore,
        directory: DeviceDirectory,
        max_gap_ms: int,
        stored: StoredReadings | None = None,
    ) -> None:
        self.bus = bus
        self.series = series
        self.directory = directory
        self.rollups = Rollups(series, max_gap_ms)
        self.stored = stored

    def loop(self) -> ConsumeLoop:
        return ConsumeLoop(self.bus, ENERGY_READINGS, GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> list[Rejected]:
        """Store and bucket a polled batch, in chunks of about CHUNK_READINGS readings.

        A poll brings up to 500 records, and a record of a batch POST holds a device's
        hundreds of readings: handled whole, such a poll of ~50,000 readings held ~300 MB at
        once and went slower than chunks of ~5,000 (benchmarks/floor.py: 26k against 41k
        readings/s). Live records (one reading each) make one chunk per poll as before.
        """
        rejected: list[Rejected] = []
        chunk: list[tuple[Message, list[Reading]]] = []
        size = 0
        for message in messages:
            try:
                readings = parse_readings_recorded(message.value)
            except MalformedEvent as exc:
                rejected.append(Rejected(message, str(exc)))
                continue
            chunk.append((message, readings))
            size += len(readings)
            if size >= CHUNK_READINGS:
                rejected += await self._store(chunk)
                chunk, size = [], 0
        if chunk:
            rejected += await self._store(chunk)
        return rejected

    async def _store(self, chunk: Sequence[tuple[Message, list[Reading]]]) -> list[Rejected]:
        """Readings stored, buckets recomputed and their changes published, for one chunk."""
        rejected: list[Rejected] = []
        by_device: dict[str, list[Reading]] = defaultdict(list)
        sources: dict[str, list[Message]] = defaultdict(list)
        for message, readings in chunk:
            for r in readings:
                by_device[r.device_id].append(r)
            if readings:
                sources[readings[0].device_id].append(message)
        contexts = await self.directory.contexts(list(by_device))
        for device_id in [d for d in by_device if d not in contexts]:
            del by_device[device_id]
            rejected.extend(Rejected(m, f"unknown device {device_id}") for m in sources[device_id])
        if not by_device:
            return rejected
        readings = [r for rs in by_device.values() for r in rs]
        all_new = len(await self.series.add_readings(readings)) == len(readings)
        if self.stored is not None:
            self.stored.notify(by_device)
        changed = await self.rollups.recompute(
            {
                device_id: DeviceReadings(
                    readings, ZoneInfo(contexts[device_id].timezone), contexts[device_id].tariff
                )
                for device_id, readings in by_device.items()
            },
            all_new,
        )
        if changed:
            # Publish before storing: if we die in between, the redelivery sees the difference
            # again and publishes again (same version), so no update is ever lost.
            await self.bus.publish(USAGE_EVENTS, [usage_updated(b) for b in changed])
            await self.series.put_buckets(changed)
        now_ms = time.time() * 1000
        for device_readings in by_device.values():
            newest = max(r.ts for r in device_readings)
            if now_ms - newest < LIVE_MS:
                BUCKET_LATENCY.observe(max(0.0, now_ms - newest) / 1000)
        return rejected
