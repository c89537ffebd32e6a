"""Checks readings against the registry and the clock, then puts them on `energy-readings`.

Shared by every way readings come in (HTTP, MQTT, CSV import), so the rules are the same for all:
a device that exists, is enabled and (when there is a caller) is the caller's; a timestamp inside
the retention window and no more than five minutes ahead. HTTP resolves each item's device from
the caller first (`record`); MQTT and imports resolve it from the topic, the payload or the
command line, and call `check` and `publish` themselves.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from energy_tracker.core.auth import Identity
from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.errors import ApiError
from energy_tracker.core.events import ENERGY_READINGS, Reading, readings_recorded
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.ingestion.schemas import ReadingIn

log = logging.getLogger(__name__)

FUTURE_TOLERANCE_MS = 5 * 60 * 1000

Problem = dict[str, Any]
"""A broken rule: {"index", "field", "message"}; `index` is whatever the caller numbered by."""


class PublishFailed(Exception):
    """The bus did not durably accept the readings: nothing may be reported as accepted."""


class ReadingRecorder:
    def __init__(self, bus: EventBus, devices: DeviceStore, retention_days: int) -> None:
        self.bus = bus
        self.devices = devices
        self.retention_ms = retention_days * 86_400_000

    async def record(self, items: Sequence[ReadingIn], identity: Identity) -> int:
        """HTTP: publish every reading, or none; ApiError 422 naming each bad item, 503 when the
        bus is down."""
        problems: list[Problem] = []
        candidates: list[tuple[int, Reading]] = []
        for index, item in enumerate(items):
            device_id = item.device_id or identity.device_id
            if device_id is None:
                problems.append(problem(index, "device_id", "required"))
            elif identity.kind == "device" and device_id != identity.device_id:
                problems.append(problem(index, "device_id", "not the device of this key"))
            else:
                candidates.append((index, item.to_reading(device_id)))
        problems += await self.check(candidates, identity)
        if problems:
            problems.sort(key=lambda p: p["index"])
            raise ApiError(
                422, "invalid", f"{len(problems)} bad reading(s); none accepted", problems[:1000]
            )
        try:
            return await self.publish(r for _, r in candidates)
        except PublishFailed:
            raise ApiError(
                503,
                "unavailable",
                "the event bus is unavailable; retry later",
                headers={"Retry-After": "5"},
            ) from None

    async def check(
        self, candidates: Sequence[tuple[int, Reading]], caller: Identity | None = None
    ) -> list[Problem]:
        """The rules each (index, reading) breaks, in one registry query.

        `caller` None (MQTT, imports: the transport has no caller): the device must exist and be
        enabled. A user: it must also be theirs (or they an admin). A device key: the key itself
        already proved its device enabled, and `record` that every reading is that device's.
        """
        now = int(time.time() * 1000)
        oldest, newest = now - self.retention_ms, now + FUTURE_TOLERANCE_MS
        problems: list[Problem] = []
        for index, reading in candidates:
            if reading.ts > newest:
                problems.append(problem(index, "ts", "more than 5 minutes in the future"))
            elif reading.ts < oldest:
                problems.append(problem(index, "ts", "older than the retention window"))
        if caller is not None and caller.kind == "device":
            return problems
        contexts = await self.devices.contexts(list({r.device_id for _, r in candidates}))
        refused: dict[str, str] = {}
        for device_id in {r.device_id for _, r in candidates}:
            ctx = contexts.get(device_id)
            if ctx is None:
                refused[device_id] = "unknown device"
            elif not ctx.enabled:
                refused[device_id] = "device is disabled"
            elif caller is not None and not caller.can_see(ctx.owner_id):
                refused[device_id] = "not your device"
        problems += [
            problem(index, "device_id", refused[r.device_id])
            for index, r in candidates
            if r.device_id in refused
        ]
        return problems

    async def publish(self, readings: Iterable[Reading]) -> int:
        """Put checked readings on the bus, one message per device (in their order); returns
        how many once the bus has durably accepted them all, else raises PublishFailed."""
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            by_device[r.device_id].append(r)
        if not by_device:
            return 0
        try:
            await self.bus.publish(
                ENERGY_READINGS, [readings_recorded(d, rs) for d, rs in by_device.items()]
            )
        except Exception as exc:
            log.error("publishing readings failed: %s", exc)
            raise PublishFailed(str(exc)) from exc
        return sum(len(rs) for rs in by_device.values())


def problem(index: int, field: str, message: str) -> Problem:
    return {"index": index, "field": field, "message": message}
