"""The usage consumer: `energy-readings` in (group `usage`), raw series and buckets stored,
`usage-events` out for every bucket that changed."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from zoneinfo import ZoneInfo

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
        rejected: list[Rejected] = []
        by_device: dict[str, list[Reading]] = defaultdict(list)
        sources: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            try:
                readings = parse_readings_recorded(message.value)
            except MalformedEvent as exc:
                rejected.append(Rejected(message, str(exc)))
                continue
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
        return rejected
