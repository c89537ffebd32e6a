"""Checks readings against the registry and the clock, then puts them on `energy-readings`.

Shared by every way readings come in (HTTP now, MQTT and imports later), so the rules are the
same for all: a device that exists, is enabled and is the caller's; a timestamp inside the
retention window and no more than five minutes ahead.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from energy_tracker.core.auth import Identity
from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.errors import ApiError
from energy_tracker.core.events import ENERGY_READINGS, Reading, readings_recorded
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.ingestion.schemas import ReadingIn

log = logging.getLogger(__name__)

FUTURE_TOLERANCE_MS = 5 * 60 * 1000


class ReadingRecorder:
    def __init__(self, bus: EventBus, devices: DeviceStore, retention_days: int) -> None:
        self.bus = bus
        self.devices = devices
        self.retention_ms = retention_days * 86_400_000

    async def record(self, items: Sequence[ReadingIn], identity: Identity) -> int:
        """Publish every reading, or none: raises ApiError naming each bad item."""
        now = int(time.time() * 1000)
        oldest, newest = now - self.retention_ms, now + FUTURE_TOLERANCE_MS
        problems: list[dict[str, Any]] = []
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for index, item in enumerate(items):
            device_id = item.device_id or identity.device_id
            ts = item.ts_ms
            if device_id is None:
                problems.append(_problem(index, "device_id", "required"))
            elif identity.kind == "device" and device_id != identity.device_id:
                problems.append(_problem(index, "device_id", "not the device of this key"))
            elif ts > newest:
                problems.append(_problem(index, "ts", "more than 5 minutes in the future"))
            elif ts < oldest:
                problems.append(_problem(index, "ts", "older than the retention window"))
            else:
                by_device[device_id].append(
                    Reading(
                        device_id, ts, item.power_w, item.energy_wh, item.voltage_v, item.current_a
                    )
                )
        if by_device and identity.kind == "user":
            contexts = await self.devices.contexts(list(by_device))
            refused = {
                d: "unknown device"
                if d not in contexts
                else "device is disabled"
                if not contexts[d].enabled
                else "not your device"
                for d in by_device
                if d not in contexts
                or not contexts[d].enabled
                or not identity.can_see(contexts[d].owner_id)
            }
            for index, item in enumerate(items):
                if item.device_id in refused:
                    problems.append(_problem(index, "device_id", refused[item.device_id]))
        if problems:
            problems.sort(key=lambda p: p["index"])
            raise ApiError(
                422, "invalid", f"{len(problems)} bad reading(s); none accepted", problems[:1000]
            )
        try:
            await self.bus.publish(
                ENERGY_READINGS, [readings_recorded(d, rs) for d, rs in by_device.items()]
            )
        except Exception as exc:
            log.error("publishing readings failed: %s", exc)
            raise ApiError(
                503,
                "unavailable",
                "the event bus is unavailable; retry later",
                headers={"Retry-After": "5"},
            ) from None
        return sum(len(rs) for rs in by_device.values())


def _problem(index: int, field: str, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}
