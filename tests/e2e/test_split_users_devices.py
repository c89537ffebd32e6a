"""Split mode on MariaDB: users, devices and ingestion each in its own `serve` process, behind two
gateway processes that share their rate limits through the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.accounts import new_device, post_reading, signed_up, status_when
from tests.processes import ServiceProcess, split_deployment

USER_LIMIT = 5  # per hour, so no token comes back while the test runs


@pytest.fixture
def split(
    tmp_path: Path, mysql_url: str, redis_url: str, redis_prefix: str
) -> Iterator[dict[str, ServiceProcess]]:
    env = {
        "ET_DB_URL": mysql_url,
        "ET_JWT_SECRET": "e2e-split-users-devices-secret-0123456789",
        "ET_REDIS_URL": redis_url,
        "ET_REDIS_PREFIX": redis_prefix,
        "ET_RATE_LIMITS": f"user={USER_LIMIT}/1h",
    }
    services = ("users", "devices", "ingestion")
    with split_deployment(tmp_path, services, env, gateways=("gateway_a", "gateway_b")) as procs:
        yield procs


@pytest.mark.mysql
@pytest.mark.redis
def test_accounts_and_devices_across_processes(split: dict[str, ServiceProcess]) -> None:
    api_a = split["gateway_a"].url + "/api/v1"
    api_b = split["gateway_b"].url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        ada = signed_up(http, api_a, "ada@example.com")
        device_id, old_key = new_device(http, api_a, ada, name="meter")
        assert post_reading(http, api_b, old_key).status_code == 202

        listed = http.get(api_b + "/devices", headers=ada)
        assert [d["id"] for d in listed.json()] == [device_id]
        assert listed.headers["x-ratelimit-limit"] == str(USER_LIMIT)

        r = http.post(api_a + f"/devices/{device_id}/rotate-key", headers=ada)
        assert r.status_code == 200, r.text
        new_key = r.json()["api_key"]
        # Ingestion is another process: it learns of the rotation within its cache's lifetime.
        assert status_when(lambda: post_reading(http, api_b, old_key), 401) == 401
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
        assert split[name].has_logged(f"[{logged}]", timeout_s=10), (
            f"{logged} not in the {name} log"
        )


@pytest.mark.mysql
@pytest.mark.redis
def test_two_gateways_enforce_one_limit(split: dict[str, ServiceProcess]) -> None:
    api_a = split["gateway_a"].url + "/api/v1"
    api_b = split["gateway_b"].url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        bob = signed_up(http, api_a, "bob@example.com")
        eve = signed_up(http, api_b, "eve@example.com")
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


@pytest.mark.mysql
@pytest.mark.redis
def test_access_tokens_across_processes(split: dict[str, ServiceProcess]) -> None:
    """A token made through the users service works in the others; revoked, the users service
    refuses it at once and the devices service within its credential cache's lifetime; its
    rate-limit bucket is its own, shared by both gateways through Redis."""
    api_a = split["gateway_a"].url + "/api/v1"
    api_b = split["gateway_b"].url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        cy = signed_up(http, api_a, "cy@example.com")  # cy's session: 4 of USER_LIMIT below
        made = http.post(
            api_a + "/users/me/tokens", json={"name": "ha", "scope": "read"}, headers=cy
        )
        assert made.status_code == 201, made.text
        token = {"Authorization": f"Bearer {made.json()['token']}"}
        # Straight to the services (no gateway, so no rate limit while polling).
        devices = split["devices"].url + "/api/v1/devices"
        me = split["users"].url + "/api/v1/users/me"
        assert http.get(devices, headers=token).status_code == 200  # now in devices' cache
        reading = {"device_id": "any", "ts": 1_700_000_000_000, "power_w": 1.0}
        r = http.post(split["ingestion"].url + "/api/v1/readings", json=reading, headers=token)
        assert r.status_code == 403, r.text  # a read token, in the ingestion process too

        r = http.delete(api_a + f"/users/me/tokens/{made.json()['id']}", headers=cy)
        assert r.status_code == 204, r.text
        r = http.get(me, headers=token)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"], r.text
        assert status_when(lambda: http.get(devices, headers=token), 401) == 401

        second = http.post(
            api_b + "/users/me/tokens", json={"name": "script", "scope": "write"}, headers=cy
        )
        assert second.status_code == 201, second.text
        script = {"Authorization": f"Bearer {second.json()['token']}"}
        spent = [
            http.get((api_a, api_b)[i % 2] + "/devices", headers=script) for i in range(USER_LIMIT)
        ]
        assert [r.status_code for r in spent] == [200] * USER_LIMIT
        assert http.get(api_a + "/devices", headers=script).status_code == 429
        assert http.get(api_b + "/devices", headers=script).status_code == 429
        assert http.get(api_b + "/devices", headers=cy).status_code == 200  # cy's own bucket
