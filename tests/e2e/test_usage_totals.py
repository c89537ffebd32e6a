"""All of a user's devices summed (`GET /usage`) through `energy-tracker up`: devices whose days
are the asked zone's are summed by the store, a device in another zone adds its own days."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, running_up

MINUTE_MS = 60_000


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def steady(device_id: str, start_iso: str, minutes: int, watts: float) -> list[dict]:
    """A reading a minute at `watts` over `minutes` minutes, the closing one included."""
    start = ms(start_iso)
    return [
        {"device_id": device_id, "ts": start + i * MINUTE_MS, "power_w": watts}
        for i in range(minutes + 1)
    ]


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path) as proc:
        yield proc


def test_all_devices_summed_by_day_and_hour(up_process: ServiceProcess) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, timezone="Europe/Berlin")
        berlin, _ = new_device(http, api, auth, name="meter")  # the owner's zone: Berlin
        utc, _ = new_device(http, api, auth, name="plug", timezone="UTC")
        # Berlin is UTC+1 in November. The meter: 1,000 W from 08:00 to 10:00 Berlin time on
        # the 20th: 2.0 kWh, 1.0 in each of the UTC hours 07 and 08. The plug: 600 W from
        # 22:30 to 23:30 UTC on the 19th, which is 23:30 to 00:30 Berlin time: 0.3 kWh on each
        # Berlin day, and on each UTC hour 22 and 23 (its own stored days are UTC ones, so its
        # Berlin days come from its quarters).
        readings = steady(berlin, "2026-11-20T08:00:00+01:00", 120, 1000.0) + steady(
            utc, "2026-11-19T22:30:00+00:00", 60, 600.0
        )
        r = http.post(api + "/readings", json={"readings": readings}, headers=auth)
        assert r.status_code == 202, r.text

        days = items_when(
            http,
            api + "/usage",
            auth,
            {"granularity": "day", "from": "2026-11-19", "to": "2026-11-21"},
            lambda i: len(i) == 2 and i[1]["energy_kwh"] > 2.29,
        )
        assert [(d["period_start"], d["energy_kwh"], d["max_power_w"]) for d in days] == [
            ("2026-11-19T00:00:00+01:00", pytest.approx(0.3), 600.0),
            ("2026-11-20T00:00:00+01:00", pytest.approx(2.3), 1000.0),
        ]

        hours = http.get(
            api + "/usage",
            params={
                "granularity": "hour",
                "from": "2026-11-19T22:00:00Z",
                "to": "2026-11-20T10:00:00Z",
                "tz": "UTC",
            },
            headers=auth,
        ).json()["items"]
        assert [(h["period_start"], h["energy_kwh"]) for h in hours] == [
            ("2026-11-19T22:00:00+00:00", pytest.approx(0.3)),
            ("2026-11-19T23:00:00+00:00", pytest.approx(0.3)),
            ("2026-11-20T07:00:00+00:00", pytest.approx(1.0)),
            ("2026-11-20T08:00:00+00:00", pytest.approx(1.0)),
            ("2026-11-20T09:00:00+00:00", 0.0),  # the meter's closing reading, nothing after
        ]
