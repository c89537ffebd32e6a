"""The insights consumer: `usage-events` in (group `insights`); each changed hour bucket is read
again into the `HourCache` the forecasts and the anomaly reports read from (store.py)."""

from __future__ import annotations

from collections.abc import Sequence

from energy_tracker.core.bus.base import EventBus, Message
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected
from energy_tracker.core.events import USAGE_EVENTS, MalformedEvent, parse_usage_updated
from energy_tracker.services.insights.store import HourCache

GROUP = "insights"


class InsightsConsumer:
    def __init__(self, bus: EventBus, cache: HourCache) -> None:
        self.bus = bus
        self.cache = cache

    def loop(self) -> ConsumeLoop:
        return ConsumeLoop(self.bus, USAGE_EVENTS, GROUP, self.handle)

    async def handle(self, messages: Sequence[Message]) -> list[Rejected]:
        """Refresh each hour bucket the batch announces, once however often it is announced."""
        rejected: list[Rejected] = []
        changed: set[tuple[str, int]] = set()
        for message in messages:
            try:
                update = parse_usage_updated(message.value)
            except MalformedEvent as exc:
                rejected.append(Rejected(message, str(exc)))
                continue
            if update.granularity == "hour":
                changed.add((update.device_id, update.period_start_ms))
        for device_id, start_ms in sorted(changed):
            await self.cache.refresh(device_id, start_ms)
        return rejected
