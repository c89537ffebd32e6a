"""SIGTERM (what `docker stop` sends) stops a process gracefully: a live stream in flight is
ended rather than cut, the usage consumer's offsets are committed, and the process exits 0
within the 10 s compose grants it."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import running_up

HOUR_MS = 3_600_000


def test_sigterm_ends_streams_commits_offsets_and_exits_in_time(tmp_path: Path) -> None:
    with running_up(tmp_path) as up, httpx.Client(timeout=30.0) as http:
        api = up.url + "/api/v1"
        auth = signed_up(http, api)
        device_id, key = new_device(http, api, auth)
        hour = (int(time.time() * 1000) // HOUR_MS - 2) * HOUR_MS
        readings = [{"ts": hour + i * 60_000, "power_w": 100.0} for i in range(61)]
        r = http.post(api + "/readings", json={"readings": readings}, headers={"X-Device-Key": key})
        assert r.status_code == 202, r.text
        params = {"granularity": "hour", "from": str(hour), "to": str(hour + HOUR_MS)}
        items_when(http, api + f"/devices/{device_id}/usage", auth, params, bool, timeout_s=60)

        stream_ended = threading.Event()

        def follow_live() -> None:
            with http.stream("GET", api + f"/devices/{device_id}/live", headers=auth) as live:
                for _ in live.iter_lines():
                    pass
            stream_ended.set()

        follower = threading.Thread(target=follow_live, daemon=True)
        follower.start()
        time.sleep(1.0)  # the stream is open and waiting

        started = time.monotonic()
        up.proc.send_signal(signal.SIGTERM)
        code = up.proc.wait(timeout=15)
        took = time.monotonic() - started
        log = up.log()

    assert code == 0, log
    assert took < 10.0, f"{took:.1f} s to stop"
    assert stream_ended.wait(5), "the live stream was not ended"
    assert "Traceback" not in log
    # Everything the usage group consumed is committed: nothing left to redeliver.
    with sqlite3.connect(tmp_path / "data" / "bus.db") as bus:
        behind = bus.execute(
            """SELECT COUNT(*) FROM (SELECT m.part, MAX(m.seq) + 1 AS end_seq FROM messages m
               JOIN topics t ON t.id = m.topic_id WHERE t.name = 'energy-readings'
               GROUP BY m.part) e
               LEFT JOIN committed c ON c.grp = 'usage' AND c.part = e.part
               AND c.topic_id = (SELECT id FROM topics WHERE name = 'energy-readings')
               WHERE COALESCE(c.next_seq, 0) < e.end_seq"""
        ).fetchone()[0]
    assert behind == 0
