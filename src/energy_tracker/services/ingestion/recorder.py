"""Checks readings against the device directory and the clock, then puts them on `energy-readings`.

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, cast

from prometheus_client import Counter

from energy_tracker.core.auth import Identity
from energy_tracker.core.authz import ROUTES, Action, allows
from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.errors import ApiError
from energy_tracker.core.events import ENERGY_READINGS, Reading, readings_recorded
from energy_tracker.services.ingestion.schemas import NoMeasurement, ReadingIn, to_reading

# What a user's role must allow in a device's household to send its readings.
_send = ROUTES[("POST", "/readings")].action
assert _send is not None
SEND: Action = _send

log = logging.getLogger(__name__)

FUTURE_TOLERANCE_MS = 5 * 60 * 1000
FUTURE = "more than 5 minutes in the future"
TOO_OLD = "older than the retention window"

Problem = dict[str, Any]
"""A broken rule: {"index", "field", "message"}; `index` is whatever the caller numbered by."""

READINGS_ACCEPTED = Counter(
    "et_readings_accepted_total", "Readings the bus durably accepted", ["transport"]
)
READINGS_REFUSED = Counter(
    "et_readings_refused_total",
    "Readings refused, by the first rule each broke (`batch_refused`: good readings of a "
    "batch refused whole; `schema`: a body or payload that is not readings)",
    ["transport", "reason"],
)
_REASONS = {
    FUTURE: "future",
    TOO_OLD: "too_old",
    "unknown device": "unknown_device",
    "device is disabled": "device_disabled",
    "not your device": "not_your_device",
    "not the device of this key": "not_this_device",
    "required": "no_device",
}


def count_refused(transport: str, problems: Sequence[Problem], total: int) -> None:
    """Count `total` refused readings, each by the reason of its first problem."""
    first: dict[Any, str] = {}
    for p in problems:
        first.setdefault(p["index"], _REASONS.get(p["message"], "invalid"))
    for reason in first.values():
        READINGS_REFUSED.labels(transport, reason).inc()
    if total > len(first):
        READINGS_REFUSED.labels(transport, "batch_refused").inc(total - len(first))


def mistimed_by(ts: int, oldest: int, newest: int) -> str | None:
    """Why a reading at `ts` lies outside the accepted window [oldest, newest]; None inside."""
    if ts > newest:
        return FUTURE
    if ts < oldest:
        return TOO_OLD
    return None


class PublishFailed(Exception):
    """The bus did not durably accept the readings: nothing may be reported as accepted."""


class ReadingRecorder:
    def __init__(self, bus: EventBus, directory: DeviceDirectory, retention_days: int) -> None:
        self.bus = bus
        self.directory = directory
        self.retention_ms = retention_days * 86_400_000

    async def record(self, items: Sequence[ReadingIn], identity: Identity) -> int:
        """HTTP: publish every reading, or none; ApiError 422 naming each bad item, 503 when the
        bus is down.

        Every reading the platform receives over HTTP passes through this loop, so it makes one
        pass that resolves, checks the clock and groups by device at once; the directory rules
        are per device, not per reading (`refusals`).
        """
        problems: list[Problem] = []
        by_device: dict[str, list[Reading]] = defaultdict(list)
        mistimed: set[str] = set()  # devices of readings refused for their time only
        own = identity.device_id
        is_device = identity.kind == "device"
        oldest, newest = self.window()
        for index, item in enumerate(items):
            device_id = item.get("device_id") or own
            ts = cast(int, item["ts"])  # epoch ms once validated
            if device_id is None:
                problems.append(problem(index, "device_id", "required"))
            elif is_device and device_id != own:
                problems.append(problem(index, "device_id", "not the device of this key"))
            elif (mistime := mistimed_by(ts, oldest, newest)) is not None:
                problems.append(problem(index, "ts", mistime))
                mistimed.add(device_id)
            else:
                try:
                    by_device[device_id].append(to_reading(item, device_id))
                except NoMeasurement as exc:
                    problems.append(problem(index, "power_w", str(exc)))
        if not is_device and (
            refused := await self.refusals(by_device.keys() | mistimed, identity)
        ):
            problems += [
                problem(index, "device_id", refused[device_id])
                for index, item in enumerate(items)
                if (device_id := item.get("device_id") or own) in refused
            ]
        if problems:
            count_refused("http", problems, len(items))
            problems.sort(key=lambda p: p["index"])
            raise ApiError(
                422, "invalid", f"{len(problems)} bad reading(s); none accepted", problems[:1000]
            )
        try:
            accepted = await self.publish_grouped(by_device)
        except PublishFailed:
            READINGS_REFUSED.labels("http", "bus_unavailable").inc(len(items))
            raise ApiError(
                503,
                "unavailable",
                "the event bus is unavailable; retry later",
                headers={"Retry-After": "5"},
            ) from None
        READINGS_ACCEPTED.labels("http").inc(accepted)
        return accepted

    def window(self) -> tuple[int, int]:
        """The oldest and newest timestamps (epoch ms) accepted now."""
        now = int(time.time() * 1000)
        return now - self.retention_ms, now + FUTURE_TOLERANCE_MS

    async def check(
        self, candidates: Sequence[tuple[int, Reading]], caller: Identity | None = None
    ) -> list[Problem]:
        """The rules each (index, reading) breaks, in one directory query (`refusals`)."""
        oldest, newest = self.window()
        problems: list[Problem] = []
        for index, reading in candidates:
            if (mistime := mistimed_by(reading.ts, oldest, newest)) is not None:
                problems.append(problem(index, "ts", mistime))
        if caller is not None and caller.kind == "device":
            return problems
        refused = await self.refusals({r.device_id for _, r in candidates}, caller)
        if refused:
            problems += [
                problem(index, "device_id", refused[r.device_id])
                for index, r in candidates
                if r.device_id in refused
            ]
        return problems

    async def refusals(
        self, device_ids: Collection[str], caller: Identity | None
    ) -> dict[str, str]:
        """Why each refused device may not record readings now, in one directory query.

        `caller` None (MQTT, imports: the transport has no caller): the device must exist and be
        enabled. A user: it must also be in a household where their role may send readings
        (POST /readings in `core.authz.ROUTES`; an admin may anywhere). A device key needs no
        lookup: the key itself proved its device enabled, and `record` that every reading is
        that device's.
        """
        if not device_ids:
            return {}
        contexts = await self.directory.contexts(list(device_ids))
        refused: dict[str, str] = {}
        for device_id in device_ids:
            ctx = contexts.get(device_id)
            if ctx is None:
                refused[device_id] = "unknown device"
            elif not ctx.enabled:
                refused[device_id] = "device is disabled"
            elif caller is not None and not allows(caller, ctx.household_id, SEND):
                refused[device_id] = "not a device you may send readings for"
        return refused

    async def publish(self, readings: Iterable[Reading]) -> int:
        """Put checked readings on the bus, one message per device (in their order); returns
        how many once the bus has durably accepted them all, else raises PublishFailed."""
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            by_device[r.device_id].append(r)
        return await self.publish_grouped(by_device)

    async def publish_grouped(self, by_device: Mapping[str, Sequence[Reading]]) -> int:
        """`publish` for readings already grouped by device."""
        if not by_device:
            return 0
        try:
            await self.bus.publish(
                ENERGY_READINGS, [readings_recorded(d, rs) for d, rs in by_device.items()]
            )
        except Exception as exc:
            reason = str(exc) or type(exc).__name__  # a timeout's text is empty; its type is not
            log.error("publishing readings failed: %s", reason)
            raise PublishFailed(reason) from exc
        return sum(len(rs) for rs in by_device.values())


def problem(index: int, field: str, message: str) -> Problem:
    return {"index": index, "field": field, "message": message}
