"""The thin slice through every layer: register, log in, add a device, send readings with its
key, read the hour's kWh back. Once with everything in one process (`up`), once with each
service in its own process over Kafka (Tansu), MariaDB and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, running_up, split_deployment

HOUR_MS = 3_600_000


def run_slice(base: str) -> None:
    api = base + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, "ada@example.com")
        device_id, key = new_device(http, api, auth, name="kettle plug", type="plug")
        assert http.get(api + f"/devices/{device_id}", headers=auth).json().get("api_key") is None

        # 1,200 W every 10 s over one whole UTC hour two hours ago, the closing sample included:
        # 1.2 kW x 1 h = 1.200 kWh.
        hour = (int(time.time() * 1000) // HOUR_MS - 2) * HOUR_MS
        readings = [
            {"device_id": device_id, "ts": hour + i * 10_000, "power_w": 1200.0} for i in range(361)
        ]
        for chunk in (readings[:200], readings[200:]):
            r = http.post(
                api + "/readings", json={"readings": chunk}, headers={"X-Device-Key": key}
            )
            assert r.status_code == 202, r.text
            assert r.json() == {"accepted": len(chunk)}

        bad = http.post(
            api + "/readings",
            headers={"X-Device-Key": key},
            json={"device_id": device_id, "ts": hour, "power_w": "lots"},
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "power_w"

        params = {"granularity": "hour", "from": str(hour), "to": str(hour + HOUR_MS)}
        items = items_when(
            http,
            api + f"/devices/{device_id}/usage",
            auth,
            params,
            lambda i: bool(i) and i[0]["samples"] == 360,
            timeout_s=60,
        )
        assert len(items) == 1, items
        assert items[0]["energy_kwh"] == 1.2  # exactly: the API rounds to 6 decimals
        assert items[0]["samples"] == 360
        assert items[0]["max_power_w"] == 1200.0


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path) as proc:
        yield proc


def test_slice_in_one_process(up_process: ServiceProcess) -> None:
    run_slice(up_process.url)


@pytest.mark.kafka
@pytest.mark.mysql
@pytest.mark.postgres
def test_slice_as_separate_services(
    tmp_path: Path, kafka_url: str, mysql_url: str, postgres_url: str
) -> None:
    env = {
        "ET_BUS_URL": kafka_url,
        "ET_DB_URL": mysql_url,
        "ET_TSDB_URL": postgres_url,
        "ET_JWT_SECRET": "e2e-split-secret-that-is-long-enough-0123456789",
    }
    services = ("users", "devices", "ingestion", "usage")
    with split_deployment(tmp_path, services, env) as procs:
        run_slice(procs["gateway"].url)
