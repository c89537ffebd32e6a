"""`energy-tracker serve insights` on its own behind a gateway, with users, devices, ingestion and
usage each in their own process on the embedded stores: readings in through the gateway, an
insight out of the time series the usage process wrote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from energy_tracker.services.gateway.routes import API_PREFIX
from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, split_deployment

DAY_MS, HOUR_MS = 86_400_000, 3_600_000


@pytest.fixture
def split(tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    services = ("users", "devices", "ingestion", "usage", "insights")
    with split_deployment(
        tmp_path, services, {"ET_JWT_SECRET": "e2e-insights-split-secret-0123456789"}
    ) as p:
        yield p


def test_insights_served_alone(split: dict[str, ServiceProcess]) -> None:
    api = split["gateway"].url + API_PREFIX
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)  # UTC, no tariff
        device_id, key = new_device(http, api, auth, name="heater", type="plug")
        # 1,000 W every 5 minutes from 10:00 to 12:00 UTC yesterday: 1 kWh in each hour.
        ten = (int(time.time() * 1000) // DAY_MS - 1) * DAY_MS + 10 * HOUR_MS
        readings = [
            {"device_id": device_id, "ts": ten + i * 300_000, "power_w": 1000.0} for i in range(25)
        ]
        r = http.post(api + "/readings", json={"readings": readings}, headers={"X-Device-Key": key})
        assert r.status_code == 202, r.text
        params = {"granularity": "hour", "from": str(ten), "to": str(ten + 3 * HOUR_MS)}
        hours = items_when(
            http, api + f"/devices/{device_id}/usage", auth, params, lambda i: len(i) == 3
        )
        assert [h["energy_kwh"] for h in hours] == [1.0, 1.0, 0.0]

        r = http.get(api + "/insights/summary", params={"device_id": device_id}, headers=auth)
        assert r.status_code == 200, r.text
        # Two hours of 1 kWh: 1,000 W, 8,760 kWh a year at no price, all of the use. The 12:00
        # hour holds only the closing sample (its energy is 11:55-12:00's): not an hour of 0 W.
        assert r.json()["baseload"] == {
            "power_w": 1000.0,
            "yearly_kwh": 8760.0,
            "yearly_cost": 0.0,
            "share_pct": 100.0,
            "hours": 2,
        }
        # Behind the gateway, the service is as closed as through it.
        direct = split["insights"].url + API_PREFIX + "/insights/forecast"
        assert http.get(direct).status_code == 401
        assert http.get(direct, headers=auth).status_code == 200
        paths = http.get(split["gateway"].url + "/openapi.json").json()["paths"]
        assert {p for p in paths if "/insights/" in p} == {
            f"{API_PREFIX}/insights/{name}" for name in ("summary", "forecast", "anomalies")
        }
