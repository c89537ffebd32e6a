"""Split mode on MariaDB: users, devices and ingestion each in its own `serve` process, behind two
gateway processes that share their rate limits through the real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ServiceProcess, free_port, run_command

PASSWORD = "correct horse battery"
USER_LIMIT = 5  # per hour, so no token comes back while the test runs


@pytest.fixture
def split(
    tmp_path: Path, mysql_url: str, redis_url: str, redis_prefix: str
) -> Iterator[dict[str, ServiceProcess]]:
    ports = {n: free_port() for n in ("users", "devices", "ingestion", "gateway_a", "gateway_b")}
    common = {
        "ET_DATA_DIR": str(tmp_path / "data"),
        "ET_DB_URL": mysql_url,
        "ET_BUS_URL": "",
        "ET_TSDB_URL": "",
        "ET_MQTT_URL": "",
        "ET_JWT_SECRET": "e2e-split-users-devices-secret-0123456789",
        "ET_REDIS_URL": redis_url,
        "ET_REDIS_PREFIX": redis_prefix,
        "ET_RATE_LIMITS": f"user={USER_LIMIT}/1h",
        **{f"ET_{n.upper()}_URL": f"http://127.0.0.1:{ports[n]}" for n in ("users", "devices")},
        "ET_INGESTION_URL": f"http://127.0.0.1:{ports['ingestion']}",
    }
    migrated = run_command(["migrate"], common)
    assert migrated.returncode == 0, migrated.stderr
    procs: dict[str, ServiceProcess] = {}
    try:
        for name, port in ports.items():
            service = "gateway" if name.startswith("gateway") else name
            procs[name] = ServiceProcess(
                ["serve", service],
                {**common, "ET_HTTP_PORT": str(port)},
                tmp_path / f"{name}.log",
            )
        for proc in procs.values():
            proc.wait_healthy()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def sign_up(http: httpx.Client, api: str, email: str) -> dict[str, str]:
    r = http.post(api + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = http.post(api + "/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def post_reading(http: httpx.Client, api: str, key: str) -> httpx.Response:
    reading = {"ts": int(time.time() * 1000), "power_w": 42.0}
    return http.post(api + "/readings", json=reading, headers={"X-Device-Key": key})


@pytest.mark.mysql
@pytest.mark.redis
def test_accounts_and_devices_across_processes(split: dict[str, ServiceProcess]) -> None:
    api_a = split["gateway_a"].url + "/api/v1"
    api_b = split["gateway_b"].url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        ada = sign_up(http, api_a, "ada@example.com")
        r = http.post(api_a + "/devices", json={"name": "meter", "type": "meter"}, headers=ada)
        assert r.status_code == 201, r.text
        device_id, old_key = r.json()["id"], r.json()["api_key"]
        assert post_reading(http, api_b, old_key).status_code == 202

        listed = http.get(api_b + "/devices", headers=ada)
        assert [d["id"] for d in listed.json()] == [device_id]
        assert listed.headers["x-ratelimit-limit"] == str(USER_LIMIT)

        r = http.post(api_a + f"/devices/{device_id}/rotate-key", headers=ada)
        assert r.status_code == 200, r.text
        new_key = r.json()["api_key"]
        assert post_reading(http, api_b, old_key).status_code == 401
        assert post_reading(http, api_a, new_key).status_code == 202

        # Behind the gateway, a service is as closed as through it.
        direct = split["devices"].url + "/api/v1/devices"
        assert http.get(direct).status_code == 401
        assert http.get(direct, headers={"X-Device-Key": new_key}).status_code == 403
        assert http.get(direct, headers=ada).status_code == 200

        # The request id the gateway settles is the one the service logs.
        rid = f"split-{uuid.uuid4().hex}"
        r = http.get(api_a + f"/devices/{device_id}", headers={**ada, "X-Request-Id": rid})
        assert r.status_code == 200 and r.headers["x-request-id"] == rid
        own = http.get(api_a + "/users/me", headers=ada).headers["x-request-id"]
        assert own
    for name, logged in (("gateway_a", rid), ("devices", rid), ("gateway_a", own), ("users", own)):
        assert _logged(split[name], f"[{logged}]"), f"{logged} not in the {name} log"


@pytest.mark.mysql
@pytest.mark.redis
def test_two_gateways_enforce_one_limit(split: dict[str, ServiceProcess]) -> None:
    api_a = split["gateway_a"].url + "/api/v1"
    api_b = split["gateway_b"].url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        bob = sign_up(http, api_a, "bob@example.com")
        eve = sign_up(http, api_b, "eve@example.com")
        remaining = [
            http.get((api_a, api_b)[i % 2] + "/devices", headers=bob) for i in range(USER_LIMIT)
        ]
        assert [r.status_code for r in remaining] == [200] * USER_LIMIT
        assert [r.headers["x-ratelimit-remaining"] for r in remaining] == [
            str(n) for n in range(USER_LIMIT - 1, -1, -1)
        ]
        for api in (api_a, api_b):
            refused = http.get(api + "/devices", headers=bob)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) > 0
            assert refused.headers["x-ratelimit-remaining"] == "0"
        # Another user's bucket is untouched, on either gateway.
        assert http.get(api_a + "/devices", headers=eve).status_code == 200


def _logged(proc: ServiceProcess, text: str, timeout_s: float = 10.0) -> bool:
    """Whether the process logs `text`; a request's line follows its response, so allow a wait."""
    deadline = time.monotonic() + timeout_s
    while text not in proc.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
