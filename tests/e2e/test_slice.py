"""The thin slice through every layer: register, log in, add a device, send readings with its
key, read the hour's kWh back. Once with everything in one process (`up`), once with each
service in its own process over Kafka (Tansu), MariaDB and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ServiceProcess, free_port, run_command

HOUR_MS = 3_600_000


def run_slice(base: str) -> None:
    api = base + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        r = http.post(
            api + "/auth/register",
            json={"email": "ada@example.com", "password": "correct horse battery"},
        )
        assert r.status_code == 201, r.text
        r = http.post(
            api + "/auth/login",
            json={"email": "ada@example.com", "password": "correct horse battery"},
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert r.json()["token_type"] == "bearer"
        auth = {"Authorization": f"Bearer {token}"}
        r = http.post(api + "/devices", json={"name": "kettle plug", "type": "plug"}, headers=auth)
        assert r.status_code == 201, r.text
        device_id, key = r.json()["id"], r.json()["api_key"]
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
        deadline = time.monotonic() + 60
        items: list[dict] = []
        while time.monotonic() < deadline:
            r = http.get(api + f"/devices/{device_id}/usage", params=params, headers=auth)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            if items and items[0]["samples"] == 360:
                break
            time.sleep(0.3)
        assert len(items) == 1, items
        assert items[0]["energy_kwh"] == pytest.approx(1.200, rel=0.01)
        assert items[0]["samples"] == 360
        assert items[0]["max_power_w"] == 1200.0


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {"ET_DATA_DIR": str(tmp_path / "data"), "ET_HTTP_PORT": str(free_port())}
    for name in ("ET_BUS_URL", "ET_DB_URL", "ET_TSDB_URL"):
        env[name] = ""
    proc = ServiceProcess(["up"], env, tmp_path / "up.log")
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def test_slice_in_one_process(up_process: ServiceProcess) -> None:
    run_slice(up_process.url)


@pytest.mark.kafka
@pytest.mark.mysql
@pytest.mark.postgres
def test_slice_as_separate_services(
    tmp_path: Path, kafka_url: str, mysql_url: str, postgres_url: str
) -> None:
    ports = {name: free_port() for name in ("users", "devices", "ingestion", "usage", "gateway")}
    common = {
        "ET_DATA_DIR": str(tmp_path / "data"),
        "ET_BUS_URL": kafka_url,
        "ET_DB_URL": mysql_url,
        "ET_TSDB_URL": postgres_url,
        "ET_JWT_SECRET": "e2e-split-secret-that-is-long-enough-0123456789",
        **{
            f"ET_{n.upper()}_URL": f"http://127.0.0.1:{p}"
            for n, p in ports.items()
            if n != "gateway"
        },
    }
    migrated = run_command(["migrate"], common)
    assert migrated.returncode == 0, migrated.stderr
    procs = []
    try:
        for name, port in ports.items():
            procs.append(
                ServiceProcess(
                    ["serve", name], {**common, "ET_HTTP_PORT": str(port)}, tmp_path / f"{name}.log"
                )
            )
        for proc in procs:
            proc.wait_healthy()
        run_slice(procs[-1].url)
    finally:
        for proc in procs:
            proc.stop()
