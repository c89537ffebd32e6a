"""What home devices publish over MQTT, turned into readings. Pure: no I/O, no clock.

- `et/<device_id>/readings` carries our JSON reading, a list of them or `{"readings": [...]}`;
  or a Shelly Gen2 switch status (`apower` W, `aenergy.total` Wh, `voltage`, `current`), bare
  (what `Shelly.getComponentStatus("switch:0")` returns) or inside a `NotifyStatus` /
  `NotifyFullStatus` RPC frame (whose `params.ts` is the time; a bare status has none, so the
  time it was received is used).
- `tele/<name>/SENSOR` is a Tasmota telemetry message; its `ENERGY` block has `Power` W, `Total`
  kWh, `Voltage` and `Current`, and its `Time` is the device's local time without an offset,
  read in the device's time zone. The device is the one whose metadata has `tasmota_topic`
  equal to `<name>`.

Every value is then validated by the same model as an HTTP reading (finite numbers, ranges).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from energy_tracker.core.events import Reading
from energy_tracker.core.inputs import TASMOTA_META_KEY  # noqa: F401 - the MQTT ingester's
from energy_tracker.services.ingestion.schemas import (
    MAX_BATCH,
    ONE_READING,
    NoMeasurement,
    to_reading,
)

SHELLY_COMPONENTS = ("switch:0", "pm1:0")
"""Components of a Shelly status frame that feed the device (its first channel or meter)."""

TopicKind = Literal["et", "tasmota"]


class PayloadError(ValueError):
    """A payload that is not a reading we understand; the message says why."""


def route(topic: str) -> tuple[TopicKind, str] | None:
    """("et", device id) for `et/<id>/readings`, ("tasmota", name) for `tele/<name>/SENSOR`."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "et" and parts[2] == "readings" and parts[1]:
        return "et", parts[1]
    if len(parts) == 3 and parts[0] == "tele" and parts[2] == "SENSOR" and parts[1]:
        return "tasmota", parts[1]
    return None


def parse_et(device_id: str, payload: bytes, received_ms: int) -> list[Reading]:
    """The readings in a payload published on `et/<device_id>/readings`."""
    body = _json(payload)
    if isinstance(body, dict) and ("method" in body or "apower" in body or "aenergy" in body):
        return _shelly(device_id, body, received_ms)
    single = not isinstance(body, list) and not (isinstance(body, dict) and "readings" in body)
    if single:
        items = [body]
    else:
        items = body if isinstance(body, list) else body["readings"]
        if not isinstance(items, list) or (isinstance(body, dict) and set(body) != {"readings"}):
            raise PayloadError('expected {"readings": [...]} and nothing else')
    if not 1 <= len(items) <= MAX_BATCH:
        raise PayloadError(f"expected 1 to {MAX_BATCH} readings, got {len(items)}")
    out = []
    for index, item in enumerate(items):
        where = "" if single else f"readings[{index}]"
        out.append(_reading(item, where, device_id))
        if item.get("device_id") not in (None, device_id):  # a dict, once it is a reading
            raise PayloadError(f"{where or 'reading'}: device_id is not the topic's device")
    return out


def parse_tasmota(device_id: str, payload: bytes, tz: ZoneInfo, received_ms: int) -> Reading:
    """The reading in a Tasmota `tele/<name>/SENSOR` message for the device mapped to `<name>`."""
    body = _json(payload)
    energy = body.get("ENERGY") if isinstance(body, dict) else None
    if not isinstance(energy, dict):
        raise PayloadError("no ENERGY block in the Tasmota SENSOR message")
    total = _number(energy.get("Total"), "ENERGY.Total")
    return _reading(
        {
            "ts": _tasmota_time(body.get("Time"), tz, received_ms),
            "power_w": _number(energy.get("Power"), "ENERGY.Power"),
            "energy_wh": None if total is None else total * 1000.0,
            "voltage_v": _first(energy.get("Voltage"), "ENERGY.Voltage"),
            "current_a": _number(energy.get("Current"), "ENERGY.Current"),
        },
        "ENERGY",
        device_id,
    )


# -- Shelly ------------------------------------------------------------------------------------


def _shelly(device_id: str, body: dict[str, Any], received_ms: int) -> list[Reading]:
    if "method" not in body:
        return [_shelly_status(device_id, body, received_ms, "status")]
    if body["method"] not in ("NotifyStatus", "NotifyFullStatus"):
        raise PayloadError(f"Shelly RPC {body['method']!r} carries no status")
    params = body.get("params")
    if not isinstance(params, dict):
        raise PayloadError("Shelly NotifyStatus without params")
    ts = params.get("ts")
    if ts is not None:
        ts = _number(ts, "params.ts")
    at = received_ms if ts is None else round(ts * 1000)
    out = []
    for name in SHELLY_COMPONENTS:
        status = params.get(name)
        # NotifyStatus sends only what changed: a frame without power or energy (say, only the
        # temperature) is not a reading, and is neither stored nor an error.
        if isinstance(status, dict) and ("apower" in status or "aenergy" in status):
            out.append(_shelly_status(device_id, status, at, f"params.{name}"))
    return out


def _shelly_status(device_id: str, status: dict[str, Any], ts_ms: int, where: str) -> Reading:
    aenergy = status.get("aenergy")
    if aenergy is not None and not isinstance(aenergy, dict):
        raise PayloadError(f"{where}.aenergy: expected an object")
    return _reading(
        {
            "ts": ts_ms,
            "power_w": _number(status.get("apower"), f"{where}.apower"),
            "energy_wh": _number((aenergy or {}).get("total"), f"{where}.aenergy.total"),
            "voltage_v": _number(status.get("voltage"), f"{where}.voltage"),
            "current_a": _number(status.get("current"), f"{where}.current"),
        },
        where,
        device_id,
    )


# -- Tasmota -----------------------------------------------------------------------------------


def _tasmota_time(value: Any, tz: ZoneInfo, received_ms: int) -> int:
    """Tasmota's `Time` is local wall time ("2026-03-29T10:15:00"), unless SetOption52 added an
    offset; an ambiguous local time (the repeated autumn hour) is read as its first occurrence."""
    if value is None:
        return received_ms
    if not isinstance(value, str):
        raise PayloadError("Time: expected a local date and time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(f"Time: {value!r} is not a date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return round(parsed.timestamp() * 1000)


def _first(value: Any, field: str) -> float | None:
    """Voltage is per phase on multi-phase meters: the first phase stands for them."""
    if isinstance(value, list):
        value = value[0] if value else None
    return _number(value, field)


# -- shared ------------------------------------------------------------------------------------


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None


def _number(value: Any, field: str) -> float | None:
    """A finite number, None when absent; lists (one value per channel) are summed."""
    if value is None:
        return None
    if isinstance(value, list):
        parts = [_number(v, field) for v in value]
        return sum(p for p in parts if p is not None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError(f"{field}: expected a finite number, got {value!r}")
    return float(value)


def _reading(item: Any, where: str, device_id: str) -> Reading:
    """The reading `item` describes for `device_id`, by the same rules as an HTTP reading."""
    try:
        return to_reading(ONE_READING.validate_python(item), device_id)
    except NoMeasurement as exc:
        raise PayloadError(f"{where or 'reading'}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in (where, *e['loc']) if p != '') or 'reading'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:10]
        )
        raise PayloadError(problems) from None
