"""`energy-tracker up` runs the usage consumer in a second process (`energy-tracker consume
usage`, background.py). Seen from outside: every reading is counted exactly once, also across
a crash of the child, which `up` starts again; the child's metrics are in `up`'s /metrics; and
however `up` goes (SIGTERM, or SIGKILL with no clean-up), no child outlives it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import running_up

HOUR_MS = 3_600_000


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone_within(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def consumer_child(up_pid: int, timeout_s: float = 30.0) -> int:
    """The pid of `up`'s `consume usage` child, once it runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in children(up_pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"consume" in argv and b"usage" in argv:
                return pid
        time.sleep(0.1)
    raise AssertionError("no `consume usage` child of up")


def hour_of_readings(hour: int) -> list[dict[str, float]]:
    """600 W a minute apart from the hour's start to the next hour's: 60 samples and 0.6 kWh
    (60 minutes at 600 W) in the hour, and one sample, no energy yet, in the next."""
    return [{"ts": hour + i * 60_000, "power_w": 600.0} for i in range(61)]


def counted(items: list[dict]) -> list[tuple[int, float]]:
    return [(i["samples"], round(i["energy_kwh"], 6)) for i in items]


def test_a_crashed_consumer_process_is_restarted_and_counts_each_reading_once(
    tmp_path: Path,
) -> None:
    with running_up(tmp_path) as up, httpx.Client(timeout=30.0) as http:
        api = up.url + "/api/v1"
        auth = signed_up(http, api)
        device_id, key = new_device(http, api, auth)
        headers = {"X-Device-Key": key}
        first = consumer_child(up.proc.pid)
        base = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS
        body = {"readings": hour_of_readings(base)}
        assert http.post(api + "/readings", json=body, headers=headers).status_code == 202
        params = {"granularity": "hour", "from": str(base), "to": str(base + 3 * HOUR_MS)}
        url = api + f"/devices/{device_id}/usage"
        once = [(60, 0.6), (1, 0.0)]
        items = items_when(http, url, auth, params, lambda i: counted(i) == once)
        assert counted(items) == once

        # The child dies as a crash would; up starts another, and /readyz says when it runs.
        os.kill(first, signal.SIGKILL)
        second = consumer_child_other_than(up.proc.pid, first)
        body = {"readings": hour_of_readings(base + HOUR_MS)}
        assert http.post(api + "/readings", json=body, headers=headers).status_code == 202
        twice = [(60, 0.6), (60, 0.6), (1, 0.0)]
        items = items_when(http, url, auth, params, lambda i: counted(i) == twice)
        ready = ready_within(http, up.url, 30)
        metrics = http.get(up.url + "/metrics").text
        log = up.log()

    # The second hour's first reading repeats the first batch's last one: stored and counted
    # once, whichever process stored it first.
    assert counted(items) == twice
    assert ready.status_code == 200, ready.text
    assert 'et_consumer_lag{group="usage"' in metrics, "the child's metrics are not merged"
    assert "starting it again" in log
    assert second != first


def ready_within(http: httpx.Client, url: str, timeout_s: float) -> httpx.Response:
    """/readyz once it says ready (up notices its child has started within a poll), or the
    last answer."""
    deadline = time.monotonic() + timeout_s
    while (ready := http.get(url + "/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return ready


def consumer_child_other_than(up_pid: int, old: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = consumer_child(up_pid, timeout_s)
        if pid != old and running(pid):
            return pid
        time.sleep(0.2)
    raise AssertionError("up did not start its consumer process again")


def test_killing_up_stops_its_child(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        child = consumer_child(up.proc.pid)
        up.proc.kill()  # no clean-up runs in up: the kernel tells the child (PDEATHSIG)
        up.proc.wait(timeout=15)
        assert gone_within([child], 15), "the consumer process outlived up"


def test_sigterm_stops_up_and_its_child(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        child = consumer_child(up.proc.pid)
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=15) == 0, up.log()
        assert gone_within([child], 1), "the consumer process outlived up"
        assert "Traceback" not in up.log()
