"""Ingestion end to end, through `energy-tracker up`: a Shelly and a Tasmota over the real
Mosquitto (127.0.0.1:1883), bad input of every kind refused with a reason (4xx or the DLQ) while
every good reading still counts, the live stream, and the CSV import."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import paho.mqtt.publish
import pytest

from energy_tracker.core.bus.embedded import EmbeddedBus
from tests.backends import MOSQUITTO, require
from tests.e2e.accounts import items_when, new_device, post_reading, signed_up
from tests.processes import ServiceProcess, embedded_env, run_command, running_up

MIN = 60_000
HOUR = 60 * MIN


def hour_ago(hours: int) -> int:
    """The start of the UTC hour `hours` before the current one, in epoch ms."""
    return (int(time.time() * 1000) // HOUR - hours) * HOUR


@pytest.fixture
def with_mqtt(tmp_path: Path) -> Iterator[ServiceProcess]:
    require("mosquitto", *MOSQUITTO)
    # The shared broker keeps no session of a test that is over.
    url = f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}?session_expiry=0"
    with running_up(tmp_path, ET_RATE_LIMITS="off", ET_MQTT_URL=url) as proc:
        assert proc.has_logged("MQTT: subscribed", timeout_s=30), proc.log()
        yield proc


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path, ET_RATE_LIMITS="off") as proc:
        yield proc


def publish(messages: list[tuple[str, bytes]]) -> None:
    paho.mqtt.publish.multiple(
        [{"topic": t, "payload": p, "qos": 1} for t, p in messages],
        hostname=MOSQUITTO[0],
        port=MOSQUITTO[1],
    )


def dead_letters(data_dir: Path, wanted: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The DLQ records of `energy-readings` in the process's embedded bus, once `wanted` are."""

    async def read() -> list[dict[str, Any]]:
        bus = EmbeddedBus(str(data_dir / "bus.db"))
        await bus.start()
        consumer = await bus.subscribe("energy-readings.dlq", f"test-{uuid.uuid4().hex}")
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(out) < wanted and time.monotonic() < deadline:
                out += [orjson.loads(m.value)["data"] for m in await consumer.poll(1000, 0.5)]
        finally:
            await consumer.close()
            await bus.stop()
        return out

    return asyncio.run(read())


def test_shelly_and_tasmota_over_mqtt(with_mqtt: ServiceProcess, tmp_path: Path) -> None:
    api = with_mqtt.url + "/api/v1"
    name = f"tasmota_{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        shelly, _ = new_device(http, api, auth, type="plug")
        tasmota, _ = new_device(
            http, api, auth, timezone="Europe/Berlin", metadata={"tasmota_topic": name}
        )
        t = hour_ago(3)

        # Shelly NotifyStatus frames every 15 min, their own ts: the counter goes 0, 250, 500,
        # 750, 1000 Wh from t to t + 1 h, so the UTC hour t holds 1,000 Wh = 1.0 kWh and four
        # samples (the fifth, at t + 1 h, opens the next hour).
        frames = [
            {
                "src": "shellyplus1pm-a8032ab12345",
                "method": "NotifyStatus",
                "params": {
                    "ts": (t + k * 15 * MIN) / 1000,
                    "switch:0": {"id": 0, "apower": 1000.0, "aenergy": {"total": 250.0 * k}},
                },
            }
            for k in range(5)
        ]
        # Tasmota SENSOR every 15 min, Time in Berlin wall time, Total in kWh: 10.000 to
        # 10.500 kWh over the same hour, so 0.5 kWh in the UTC hour t (read as UTC wall time,
        # it would land one or two hours off).
        berlin = ZoneInfo("Europe/Berlin")
        sensors = [
            {
                "Time": datetime.fromtimestamp((t + k * 15 * MIN) / 1000, berlin)
                .replace(tzinfo=None)
                .isoformat(),
                "ENERGY": {"Total": 10.0 + 0.125 * k, "Power": 500, "Voltage": 230, "Current": 2.2},
            }
            for k in range(5)
        ]
        before_bare = int(time.time() * 1000)
        bare_status = {"id": 0, "apower": 12.5, "aenergy": {"total": 1100.0}, "voltage": 231.0}
        publish(
            [(f"et/{shelly}/readings", orjson.dumps(f)) for f in frames]
            + [(f"tele/{name}/SENSOR", orjson.dumps(s)) for s in sensors]
            + [(f"et/{shelly}/readings", orjson.dumps(bare_status))]
            + [
                (f"tele/{name}_unmapped/SENSOR", orjson.dumps(sensors[0])),
                (f"et/{shelly}/readings", b'{"apower": 5, "aenergy": {"total": 1'),
            ]
        )
        after_bare = int(time.time() * 1000)

        params = {"granularity": "hour", "from": str(t), "to": str(t + HOUR)}
        items = items_when(
            http,
            f"{api}/devices/{shelly}/usage",
            auth,
            params,
            lambda i: bool(i) and i[0]["samples"] == 4,
        )
        assert [(i["energy_kwh"], i["samples"], i["max_power_w"]) for i in items] == [
            (1.0, 4, 1000.0)
        ]
        items = items_when(
            http,
            f"{api}/devices/{tasmota}/usage",
            auth,
            {**params, "tz": "UTC"},
            lambda i: bool(i) and i[0]["samples"] == 4,
        )
        assert [(i["energy_kwh"], i["samples"]) for i in items] == [(0.5, 4)]
        r = http.get(
            f"{api}/devices/{shelly}/readings", params={"from": str(before_bare)}, headers=auth
        )
        (bare,) = r.json()["items"]
        assert before_bare - 1000 <= bare["ts_ms"] <= after_bare + 5000
        assert (bare["power_w"], bare["energy_wh"], bare["voltage_v"]) == (12.5, 1100.0, 231.0)

    letters = dead_letters(tmp_path / "data", 2)
    reasons = {
        letter["source"]["mqtt_topic"]: (letter["error"], base64.b64decode(letter["value_b64"]))
        for letter in letters
    }
    error, original = reasons[f"tele/{name}_unmapped/SENSOR"]
    assert "unknown device" in error and f"{name}_unmapped" in error
    assert original == orjson.dumps(sensors[0])
    error, original = reasons[f"et/{shelly}/readings"]
    assert error.startswith("not JSON") and original == b'{"apower": 5, "aenergy": {"total": 1'


def test_bad_input_is_refused_and_good_readings_all_count(
    with_mqtt: ServiceProcess, tmp_path: Path
) -> None:
    api = with_mqtt.url + "/api/v1"
    with httpx.Client(timeout=60.0) as http:
        auth = signed_up(http, api)
        mine, key = new_device(http, api, auth)
        theirs, _ = new_device(http, api, signed_up(http, api))
        t = hour_ago(2)

        def good(first: int, last: int) -> None:
            body = {"readings": [{"ts": t + i * MIN, "power_w": 600.0} for i in range(first, last)]}
            r = http.post(api + "/readings", json=body, headers={"X-Device-Key": key})
            assert (r.status_code, r.json()) == (202, {"accepted": last - first}), r.text

        def refused(
            status: int, body: bytes, headers: dict[str, str] | None = None
        ) -> dict[str, Any]:
            r = http.post(
                api + "/readings",
                content=body,
                headers={"content-type": "application/json", **(headers or auth)},
            )
            assert r.status_code == status, r.text
            error = r.json()["error"]
            assert set(error) == {"code", "message", "details"} and error["message"]
            return error

        def reading(**fields: Any) -> bytes:
            return orjson.dumps({"device_id": mine, "ts": t, "power_w": 1.0, **fields})

        good(0, 20)
        nan = b'{"device_id": "%s", "ts": %d, "power_w": NaN}' % (mine.encode(), t)
        assert "not JSON" in refused(400, nan)["message"]
        infinity = b'{"device_id": "%s", "ts": %d, "power_w": 1e999}' % (mine.encode(), t)
        assert "infinity" in refused(400, infinity)["message"]
        error = refused(422, reading(power_w="12"))
        assert error["details"][0]["field"] == "power_w"
        error = refused(422, reading(ts=0))  # 1970
        assert error["details"] == [
            {"index": 0, "field": "ts", "message": "older than the retention window"}
        ]
        next_year = int((datetime.now(UTC) + timedelta(days=365)).timestamp() * 1000)
        error = refused(422, reading(ts=next_year))
        assert error["details"][0]["message"] == "more than 5 minutes in the future"
        good(20, 40)
        error = refused(422, reading(device_id=str(uuid.uuid4())))
        assert error["details"][0]["message"] == "unknown device"
        error = refused(422, reading(device_id=theirs))
        assert error["details"][0]["message"] == "not a device you may send readings for"
        error = refused(422, reading(device_id=theirs), {"X-Device-Key": key})
        assert error["details"][0]["message"] == "not the device of this key"
        # A batch with one bad item is refused whole: its good items count for nothing.
        batch = {
            "readings": [
                {"device_id": mine, "ts": t + 30 * MIN + 1, "power_w": 99999.0},
                {"device_id": mine, "ts": t, "power_w": "lots"},
            ]
        }
        error = refused(422, orjson.dumps(batch))
        assert [(d["field"], d["message"][:20]) for d in error["details"]] == [
            ("readings.1.power_w", "Input should be a va")
        ]
        # 50 MB declared: refused from the headers, before the body is read.
        assert oversized_request(with_mqtt.port, auth, 50 * 1024 * 1024).startswith(b"HTTP/1.1 413")
        # Invalid JSON over MQTT: to the DLQ, with the reason.
        publish([(f"et/{mine}/readings", b"{this is not json")])
        good(40, 61)

        # 61 good readings of 600 W a minute apart from t: the hour t holds 60 samples and
        # 0.6 kW x 1 h = 0.6 kWh; nothing of the refused requests.
        params = {"granularity": "hour", "from": str(t), "to": str(t + HOUR)}
        items = items_when(
            http,
            f"{api}/devices/{mine}/usage",
            auth,
            params,
            lambda i: bool(i) and i[0]["samples"] == 60,
        )
        assert [(i["energy_kwh"], i["samples"], i["max_power_w"]) for i in items] == [
            (0.6, 60, 600.0)
        ]
    letters = dead_letters(tmp_path / "data", 1)
    assert [(x["source"]["mqtt_topic"], x["error"][:8]) for x in letters] == [
        (f"et/{mine}/readings", "not JSON")
    ]


def oversized_request(port: int, auth: dict[str, str], declared: int) -> bytes:
    """Send the headers of a `declared`-byte POST and 1 MB of its body; the response's head."""
    head = (
        f"POST /api/v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth['Authorization']}\r\nContent-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            sock.sendall(b"[" + b" " * (1024 * 1024))
        except OSError:
            pass  # the server may close as soon as it has answered
        return sock.recv(4096)


def test_live_stream(plain: ServiceProcess) -> None:
    api = plain.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        device, key = new_device(http, api, auth)
        stranger = signed_up(http, api)
        assert http.get(f"{api}/devices/{device}/live", headers=stranger).status_code == 404
        t = hour_ago(1)

        def send(ts: int, watts: float) -> None:
            r = post_reading(http, api, key, ts=ts, power_w=watts)
            assert r.status_code == 202, r.text

        send(t, 100.0)
        send(t + MIN, 200.0)
        readings = f"{api}/devices/{device}/readings"
        stored = items_when(
            http, readings, auth, {}, lambda i: len(i) >= 2, timeout_s=60, interval_s=0.2
        )
        assert len(stored) >= 2, "2 readings not stored in 60 s"
        # Without Last-Event-ID: the latest stored reading first, then each new one.
        with http.stream("GET", f"{api}/devices/{device}/live", headers=auth) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream.iter_lines())
            assert next(events) == (t + MIN, 200.0)
            send(t + 2 * MIN, 300.0)
            assert next(events) == (t + 2 * MIN, 300.0)
        # Resuming after the first reading replays the ones after it.
        with http.stream(
            "GET", f"{api}/devices/{device}/live", headers={**auth, "Last-Event-ID": str(t)}
        ) as stream:
            events = sse_events(stream.iter_lines())
            assert [next(events), next(events)] == [(t + MIN, 200.0), (t + 2 * MIN, 300.0)]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[int, float]]:
    """(id, power_w) of each `reading` event; comments (heartbeats) are skipped."""
    event: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if event.get("event") == "reading":
                yield int(event["id"]), orjson.loads(event["data"])["power_w"]
            event = {}
            continue
        field, _, value = line.partition(":")
        event[field] = value.lstrip(" ")


def test_csv_import(plain: ServiceProcess, tmp_path: Path) -> None:
    api = plain.url + "/api/v1"
    env = embedded_env(tmp_path)
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        device, _ = new_device(http, api, auth)
        t = hour_ago(5)

        # Three hours of 1.2 kW a minute, the closing sample included (181 rows), half of them
        # as RFC 3339, half as epoch ms; an extra column that is ignored.
        rows = ["ts,power_w,energy_wh,note"]
        for i in range(181):
            ts = t + i * MIN
            when = str(ts) if i % 2 else datetime.fromtimestamp(ts / 1000, UTC).isoformat()
            rows.append(f"{when},1200,,from the old logger")
        bad = [
            *rows[:4],
            f"{t + 3 * MIN},nan,,",  # line 5
            f"{t + 4 * MIN},abc,,",  # line 6
            "0,100,,",  # line 7: 1970
            f"{t + 5 * MIN},100",  # line 8: a cell missing
            f"{t + 6 * MIN},,,",  # line 9: neither power nor energy
            *rows[7:],
        ]
        bad_file = tmp_path / "bad.csv"
        bad_file.write_text("\n".join(bad) + "\n")
        result = run_command(["import", str(bad_file), "--device", device], env)
        assert result.returncode == 1, result.stderr
        for line in (5, 6, 7, 8, 9):
            assert f"bad.csv:{line}:" in result.stderr, result.stderr
        assert "nothing imported" in result.stderr
        assert "bad.csv:4:" not in result.stderr and "bad.csv:10:" not in result.stderr
        # A marker sent after it: one device's messages are consumed in order, so once the
        # marker is stored, anything the refused import had published would be stored too.
        marker = t - 10 * MIN
        r = http.post(
            f"{api}/readings",
            headers=auth,
            json={"device_id": device, "ts": marker, "power_w": 1200.0},
        )
        assert r.status_code == 202, r.text
        stored = items_when(http, f"{api}/devices/{device}/readings", auth, {}, bool)
        assert [i["ts_ms"] for i in stored] == [marker]

        good_file = tmp_path / "good.csv"
        good_file.write_text("\n".join(rows) + "\n")
        result = run_command(["import", str(good_file), "--device", device, "--batch", "50"], env)
        assert result.returncode == 0, result.stderr
        assert "imported 181 reading(s) of 181 rows" in result.stdout
        assert "rows/s" in result.stdout
        assert "ignored columns: note" in result.stderr

        # 1.2 kW x 1 h = 1.2 kWh in each of the three hours, 60 samples each.
        params = {"granularity": "hour", "from": str(t), "to": str(t + 3 * HOUR)}
        items = items_when(
            http,
            f"{api}/devices/{device}/usage",
            auth,
            params,
            lambda i: len(i) == 3 and all(x["samples"] == 60 for x in i),
        )
        assert [(i["energy_kwh"], i["samples"]) for i in items] == [(1.2, 60)] * 3

        # --skip-bad imports the good rows of the bad file, into a device of their own so that
        # they are seen to arrive: the 3 rows before the bad lines and the 174 after them.
        other, _ = new_device(http, api, auth)
        result = run_command(["import", str(bad_file), "--device", other, "--skip-bad"], env)
        assert result.returncode == 0, result.stderr
        assert "5 bad line(s) skipped" in result.stdout
        good = [t + i * MIN for i in (0, 1, 2, *range(6, 181))]
        params = {"limit": "1000"}
        stored = items_when(
            http, f"{api}/devices/{other}/readings", auth, params, lambda i: len(i) >= len(good)
        )
        assert [i["ts_ms"] for i in stored] == good
