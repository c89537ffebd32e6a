"""The MQTT payload shapes of real devices, parsed into readings; bad ones refused with a reason."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from energy_tracker.core.events import Reading
from energy_tracker.services.ingestion.payloads import PayloadError, parse_et, parse_tasmota, route

DEV = "dev-1"
RECEIVED = 1_790_000_000_000  # 2026-09-21T14:13:20Z, "now" when a message carries no time
BERLIN = ZoneInfo("Europe/Berlin")


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_topics() -> None:
    assert route("et/abc/readings") == ("et", "abc")
    assert route("tele/kitchen_plug/SENSOR") == ("tasmota", "kitchen_plug")
    assert route("et//readings") is None
    assert route("tele/x/STATE") is None
    assert route("et/a/b/readings") is None


def test_our_reading_a_list_and_a_batch() -> None:
    one = {"ts": "2026-09-21T12:00:00+02:00", "power_w": 100.0}
    assert parse_et(DEV, orjson.dumps(one), RECEIVED) == [
        Reading(DEV, ms("2026-09-21T10:00:00+00:00"), power_w=100.0)
    ]
    two = [{"ts": 1000, "energy_wh": 5.0}, {"device_id": DEV, "ts": 2000, "power_w": -3}]
    expected = [Reading(DEV, 1000, energy_wh=5.0), Reading(DEV, 2000, power_w=-3.0)]
    assert parse_et(DEV, orjson.dumps(two), RECEIVED) == expected
    assert parse_et(DEV, orjson.dumps({"readings": two}), RECEIVED) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"ts": 1000, "power_w": NaN}', "not JSON"),  # NaN is no JSON literal
        (b'{"ts": 1000, "power_w": 1e999}', "infinity"),  # orjson refuses infinities
        (b'{"ts": 1000, "power_w": "12"}', "power_w"),
        (b'{"ts": 1000}', "power_w or energy_wh"),
        (b'{"ts": "2026-09-21T12:00:00", "power_w": 1}', "ts"),  # no offset
        (b'{"device_id": "other", "ts": 1000, "power_w": 1}', "not the topic's device"),
        (b'[{"ts": 1000, "power_w": 1}, {"ts": 2000, "power_w": true}]', "readings[1].power_w"),
        (b"[]", "expected 1 to"),
        (b'{"readings": [], "extra": 1}', "nothing else"),
    ],
)
def test_bad_json_readings(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_et(DEV, payload, RECEIVED)


def test_shelly_gen2_switch_status_at_receive_time() -> None:
    # Shelly.getComponentStatus("switch:0"): apower in W, aenergy.total a counter in Wh.
    status = {
        "id": 0,
        "source": "timer",
        "output": True,
        "apower": 118.4,
        "voltage": 231.2,
        "current": 0.512,
        "aenergy": {"total": 12345.678, "by_minute": [1.9, 1.9, 1.9], "minute_ts": 1790000000},
        "temperature": {"tC": 41.3, "tF": 106.4},
    }
    assert parse_et(DEV, orjson.dumps(status), RECEIVED) == [
        Reading(DEV, RECEIVED, power_w=118.4, energy_wh=12345.678, voltage_v=231.2, current_a=0.512)
    ]


def test_shelly_notify_status_frame_uses_its_time() -> None:
    frame = {
        "src": "shellyplus1pm-a8032ab12345",
        "dst": "et/dev-1/events",
        "method": "NotifyStatus",
        "params": {
            "ts": 1790000012.34,
            "switch:0": {"id": 0, "apower": 0, "aenergy": {"total": 7}},
        },
    }
    assert parse_et(DEV, orjson.dumps(frame), RECEIVED) == [
        Reading(DEV, 1_790_000_012_340, power_w=0.0, energy_wh=7.0)
    ]
    # Only the temperature changed: no reading, and no error either.
    frame["params"] = {"ts": 1790000013.0, "switch:0": {"id": 0, "temperature": {"tC": 42}}}
    assert parse_et(DEV, orjson.dumps(frame), RECEIVED) == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"apower": "118"}, "apower"),
        ({"apower": True}, "apower"),
        ({"apower": 1, "aenergy": 5}, "aenergy"),
        ({"aenergy": {"total": -1}}, "energy_wh"),
        ({"method": "Switch.Set", "params": {}}, "carries no status"),
    ],
)
def test_bad_shelly(status: dict, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_et(DEV, orjson.dumps(status), RECEIVED)


def test_tasmota_sensor_in_the_device_zone() -> None:
    # Tasmota's Time is local wall time: 10:15 in Berlin in summer is 08:15 UTC. Total is kWh.
    sensor = {
        "Time": "2026-07-01T10:15:00",
        "ENERGY": {
            "TotalStartTime": "2025-01-01T00:00:00",
            "Total": 123.456,
            "Yesterday": 1.2,
            "Today": 0.4,
            "Period": 3,
            "Power": 240,
            "ApparentPower": 250,
            "ReactivePower": 70,
            "Factor": 0.96,
            "Voltage": 229,
            "Current": 1.09,
        },
    }
    assert parse_tasmota(DEV, orjson.dumps(sensor), BERLIN, RECEIVED) == Reading(
        DEV,
        ms("2026-07-01T08:15:00+00:00"),
        power_w=240.0,
        energy_wh=123_456.0,
        voltage_v=229.0,
        current_a=1.09,
    )


def test_tasmota_two_channels_and_no_time() -> None:
    # A two-channel device reports Power and Current per channel: the device draws their sums.
    sensor = {
        "ENERGY": {"Total": 0.5, "Power": [100, 50], "Voltage": [230, 230], "Current": [1, 2]}
    }
    assert parse_tasmota(DEV, orjson.dumps(sensor), BERLIN, RECEIVED) == Reading(
        DEV, RECEIVED, power_w=150.0, energy_wh=500.0, voltage_v=230.0, current_a=3.0
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"Time": "2026-07-01T10:15:00", "DS18B20": {"Temperature": 21.5}}', "no ENERGY"),
        (b'{"ENERGY": {"Power": "240"}}', "ENERGY.Power"),
        (b'{"Time": "yesterday", "ENERGY": {"Power": 1}}', "Time"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_bad_tasmota(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_tasmota(DEV, payload, BERLIN, RECEIVED)
