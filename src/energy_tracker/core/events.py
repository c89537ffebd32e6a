"""Topic names and the versioned JSON envelopes that travel on them.

Every value is `{"v": 1, "type": ..., "data": ...}`. Readings travel as one message per device
batch (key: device id), so a device's readings stay in order within a partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from energy_tracker.core.stores.timeseries.base import Bucket

ENERGY_READINGS = "energy-readings"
USAGE_EVENTS = "usage-events"
ALERT_EVENTS = "alert-events"
TOPICS = (ENERGY_READINGS, USAGE_EVENTS, ALERT_EVENTS)

ENVELOPE_VERSION = 1


class MalformedEvent(ValueError):
    """A message whose bytes are not a valid envelope of the expected type."""


# Not frozen, though never changed: a frozen dataclass's __init__ sets each field through
# object.__setattr__ and costs ~5x more, and every reading is built again by each consumer.
@dataclass(slots=True)
class Reading:
    """One sample of a device. `ts` is epoch milliseconds (UTC); energy_wh is a counter."""

    device_id: str
    ts: int
    power_w: float | None = None
    energy_wh: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None


def encode(type_: str, data: Any) -> bytes:
    return orjson.dumps({"v": ENVELOPE_VERSION, "type": type_, "data": data})


def decode(value: bytes, expected_type: str) -> Any:
    """The envelope's data, or MalformedEvent saying what is wrong."""
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
        raise MalformedEvent("not a v1 envelope")
    if envelope.get("type") != expected_type:
        raise MalformedEvent(f"type {envelope.get('type')!r}, expected {expected_type!r}")
    return envelope.get("data")


# -- energy-readings ---------------------------------------------------------------------------

READINGS_RECORDED = "readings-recorded"
_READING_FIELDS = ("ts", "power_w", "energy_wh", "voltage_v", "current_a")


def readings_recorded(device_id: str, readings: Sequence[Reading]) -> tuple[bytes, bytes]:
    """One device's readings as a (key, value) record; rows are [ts, power, energy, V, A]."""
    rows = [[r.ts, r.power_w, r.energy_wh, r.voltage_v, r.current_a] for r in readings]
    return device_id.encode(), encode(
        READINGS_RECORDED, {"device_id": device_id, "fields": _READING_FIELDS, "rows": rows}
    )


def parse_readings_recorded(value: bytes) -> list[Reading]:
    data = decode(value, READINGS_RECORDED)
    try:
        device_id = data["device_id"]
        if not isinstance(device_id, str):
            raise TypeError("device_id is not a string")
        out = []
        for ts, power, energy, volts, amps in data["rows"]:
            if not isinstance(ts, int):
                raise TypeError("ts is not an integer")
            out.append(Reading(device_id, ts, power, energy, volts, amps))
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"bad readings payload: {exc}") from None


# -- usage-events ------------------------------------------------------------------------------

USAGE_UPDATED = "usage-updated"

# -- alert-events ------------------------------------------------------------------------------

ALERT_TRANSITIONED = "alert-transitioned"


def usage_updated(bucket: Bucket) -> tuple[bytes, bytes]:
    """A changed bucket as a (key, value) record; consumers keep the highest version."""
    return bucket.device_id.encode(), encode(
        USAGE_UPDATED,
        {
            "device_id": bucket.device_id,
            "granularity": str(bucket.granularity),
            "period_start_ms": bucket.start,
            "energy_kwh": bucket.energy_wh / 1000.0,
            "cost": bucket.cost,
            "avg_power_w": bucket.avg_power_w,
            "min_power_w": bucket.min_power_w,
            "max_power_w": bucket.max_power_w,
            "samples": bucket.samples,
            "version": bucket.version,
        },
    )


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    """The part of a usage-updated message that identifies and values its bucket."""

    device_id: str
    granularity: str
    period_start_ms: int
    energy_kwh: float
    cost: float
    version: int


def parse_usage_updated(value: bytes) -> UsageUpdate:
    data = decode(value, USAGE_UPDATED)
    try:
        update = UsageUpdate(
            device_id=data["device_id"],
            granularity=data["granularity"],
            period_start_ms=data["period_start_ms"],
            energy_kwh=float(data["energy_kwh"]),
            cost=float(data["cost"]),
            version=data["version"],
        )
        if not isinstance(update.device_id, str) or not isinstance(update.granularity, str):
            raise TypeError("device_id and granularity must be strings")
        if not isinstance(update.period_start_ms, int) or not isinstance(update.version, int):
            raise TypeError("period_start_ms and version must be integers")
        return update
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"bad usage payload: {exc}") from None


def alert_transitioned(user_id: str, data: dict[str, Any]) -> tuple[bytes, bytes]:
    """An alert transition as a (key, value) record keyed by the alert's owner; `data["id"]`
    is the transition's stable id, which consumers deduplicate on."""
    return user_id.encode(), encode(ALERT_TRANSITIONED, data)
