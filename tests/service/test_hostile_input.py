"""Hostile and absurd input through the real app (every service in one process, embedded stores):
each is a clear 4xx naming what is wrong, never a 500, and none makes the server do unbounded
work first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from energy_tracker.app import create_admin, create_app, migrate
from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.core.rate_limits import parse_rate_limits

API = "/api/v1"
PASSWORD = "correct horse battery"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        db_url=None,
        bus_url=None,
        redis_url=None,
        jwt_secret="service-test-secret-0123456789-0123456789",
        rate_limits=parse_rate_limits("off"),
    )
    await migrate(settings)
    built = create_app(settings, list(SERVICE_NAMES), gateway=True)
    async with built.router.lifespan_context(built):
        yield built


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@pytest.fixture
async def auth(http: httpx.AsyncClient) -> dict[str, str]:
    r = await http.post(
        API + "/auth/register", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert r.status_code == 201, r.text
    r = await http.post(API + "/auth/login", json={"email": "a@example.com", "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
async def device(http: httpx.AsyncClient, auth: dict[str, str]) -> str:
    r = await http.post(API + "/devices", headers=auth, json={"name": "meter", "type": "meter"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def refused(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if field is not None:
        assert field in [d["field"] for d in error["details"]], error
    return error


async def test_a_usage_range_past_its_granularitys_limit_is_refused(
    http: httpx.AsyncClient, auth: dict[str, str], device: str
) -> None:
    # 1971 to 8999 by days in another zone than the device's was 2.6 million days summed on
    # the event loop (14 s). Days answer at most 3,660 days; 3,000 days are fine.
    params = {"granularity": "day", "from": "1971-01-01", "to": "8999-12-31", "tz": "Asia/Tokyo"}
    r = await http.get(f"{API}/devices/{device}/usage", headers=auth, params=params)
    assert "3660 days" in refused(r, 422, "from")["message"]
    r = await http.get(API + "/usage", headers=auth, params=params)
    refused(r, 422, "from")
    params.update({"from": "2000-01-01", "to": "2008-03-18"})  # 3,000 days
    r = await http.get(f"{API}/devices/{device}/usage", headers=auth, params=params)
    assert r.status_code == 200, r.text
    # Quarters answer at most 400 days.
    params = {"granularity": "15min", "from": "2025-01-01", "to": "2026-03-01"}
    r = await http.get(f"{API}/devices/{device}/usage", headers=auth, params=params)
    refused(r, 422, "from")


@pytest.mark.parametrize(
    ("param", "value"),
    [("to", "9" * 20), ("from", "10000-01-01"), ("to", "0001-01-01T00:00:00+14:00")],
)
async def test_instants_outside_1970_to_9999_are_refused(
    http: httpx.AsyncClient, auth: dict[str, str], device: str, param: str, value: str
) -> None:
    r = await http.get(f"{API}/devices/{device}/usage", headers=auth, params={param: value})
    refused(r, 422, param)
    r = await http.get(f"{API}/devices/{device}/readings", headers=auth, params={param: value})
    refused(r, 422, param)


async def test_a_cursor_or_offset_beyond_64_bits_is_a_422(
    http: httpx.AsyncClient, auth: dict[str, str], device: str
) -> None:
    r = await http.get(f"{API}/devices/{device}/readings", headers=auth, params={"cursor": 2**70})
    refused(r, 422, "query.cursor")
    huge = "5128651615821519984263168"
    for path in ("/alerts", "/alert-rules", "/devices"):
        r = await http.get(API + path, headers=auth, params={"offset": huge})
        refused(r, 422, "query.offset")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    http: httpx.AsyncClient,
) -> None:
    # 300 MB offered in 1 MiB chunks with no length declared: 413 after at most the limit
    # (64 KiB) and one chunk more were taken from the client.
    taken = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal taken
        for _ in range(300):
            taken += 1
            yield b" " * (1 << 20)

    r = await http.post(
        API + "/auth/register", content=body(), headers={"content-type": "application/json"}
    )
    assert refused(r, 413)["code"] == "payload_too_large"
    assert taken <= 2
    # A declared length over the limit is refused without reading a byte.
    r = await http.post(
        API + "/auth/login",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": str(300 << 20)},
    )
    refused(r, 413)


async def test_readings_keep_their_larger_body_limit(
    http: httpx.AsyncClient, auth: dict[str, str], device: str
) -> None:
    # 2,000 readings (about 150 KB, over the 64 KiB of other routes): accepted.
    readings = [
        {"device_id": device, "ts": 1_700_000_000_000 + i, "power_w": 1} for i in range(2000)
    ]
    r = await http.post(API + "/readings", headers=auth, json={"readings": readings})
    assert r.status_code in (202, 422), r.text  # 422: older than the retention window
    assert r.status_code != 413


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"metadata": {"x": NaN}}', "metadata.x"),
        (b'{"metadata": {"x": [1, -Infinity]}}', "metadata.x.1"),
        (b'{"metadata": {"x": 1e400}}', "metadata.x"),
        (b'{"metadata": {"x": 18446744073709551616}}', "metadata.x"),
        (b'{"metadata": {"x": "a\\u0000b"}}', "metadata.x"),
        (b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body"),
        (b'{"metadata": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}", "metadata.a.a.a"),
    ],
)
async def test_json_no_store_can_keep_is_refused_naming_the_field(
    http: httpx.AsyncClient, auth: dict[str, str], device: str, raw: bytes, field: str
) -> None:
    headers = {**auth, "content-type": "application/json"}
    r = await http.patch(f"{API}/devices/{device}", headers=headers, content=raw)
    error = refused(r, 422)
    assert any(d["field"].startswith(field) for d in error["details"]), error
    r = await http.get(f"{API}/devices/{device}", headers=auth)
    assert r.json()["metadata"] in ({}, None)


@pytest.mark.parametrize("name", ["two\nlines", "nul\x00", "tab\there", "esc\x1b[31m"])
async def test_control_characters_in_names_are_refused(
    http: httpx.AsyncClient, auth: dict[str, str], device: str, name: str
) -> None:
    r = await http.post(API + "/devices", headers=auth, json={"name": name, "type": "plug"})
    refused(r, 422, "name")
    rule = {
        "name": name,
        "device_id": device,
        "metric": "power_w",
        "threshold": 2000,
        "severity": "warning",
        "channels": [],
    }
    r = await http.post(API + "/alert-rules", headers=auth, json=rule)
    refused(r, 422, "name")
    r = await http.patch(API + "/users/me", headers=auth, json={"name": name})
    refused(r, 422, "name")


async def test_a_tasmota_topic_belongs_to_one_device(
    http: httpx.AsyncClient, auth: dict[str, str], device: str
) -> None:
    # Another home claiming "kitchen" would take this home's Tasmota readings, or (two claims)
    # send them all to the DLQ: the second claim is a 409, the owner may repeat its own.
    claim = {"metadata": {"tasmota_topic": "kitchen"}}
    r = await http.patch(f"{API}/devices/{device}", headers=auth, json=claim)
    assert r.status_code == 200, r.text
    r = await http.patch(f"{API}/devices/{device}", headers=auth, json=claim)
    assert r.status_code == 200, r.text
    body = {"email": "b@example.com", "password": PASSWORD}
    await http.post(API + "/auth/register", json=body)
    token = (await http.post(API + "/auth/login", json=body)).json()["access_token"]
    other = {"Authorization": f"Bearer {token}"}
    r = await http.post(
        API + "/devices", headers=other, json={"name": "p", "type": "plug", **claim}
    )
    refused(r, 409, "metadata.tasmota_topic")
    r = await http.post(API + "/devices", headers=other, json={"name": "p", "type": "plug"})
    r = await http.patch(f"{API}/devices/{r.json()['id']}", headers=other, json=claim)
    refused(r, 409, "metadata.tasmota_topic")


async def login_tokens(http: httpx.AsyncClient, email: str) -> dict:
    body = {"email": email, "password": PASSWORD}
    r = await http.post(API + "/auth/login", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post(API + "/auth/refresh", json={"refresh_token": token})


async def test_a_refresh_token_used_twice_revokes_every_session(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # A stolen refresh token: the thief rotates it (first), the owner's copy is used again
    # later. Both now hold a token, and nothing tells whose is whose: every refresh token of
    # the account stops, the thief's successor as well as another session's.
    other_session = (await login_tokens(http, "a@example.com"))["refresh_token"]
    stolen = (await login_tokens(http, "a@example.com"))["refresh_token"]
    r = await refresh(http, stolen)
    assert r.status_code == 200, r.text
    thiefs = r.json()["refresh_token"]
    assert (await refresh(http, stolen)).status_code == 401
    assert (await refresh(http, thiefs)).status_code == 401
    assert (await refresh(http, other_session)).status_code == 401
    # Signing in again works.
    assert (
        await refresh(http, (await login_tokens(http, "a@example.com"))["refresh_token"])
    ).status_code == 200


async def test_logout_ends_its_refresh_token(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    tokens = await login_tokens(http, "a@example.com")
    other_session = (await login_tokens(http, "a@example.com"))["refresh_token"]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = await http.post(
        API + "/auth/logout", headers=bearer, json={"refresh_token": tokens["refresh_token"]}
    )
    assert r.status_code == 204, r.text
    # Only that session ended: another one's token still refreshes (so the 401 below is the
    # logout's doing, not a refresh route that refuses everything).
    assert (await refresh(http, other_session)).status_code == 200
    assert (await refresh(http, tokens["refresh_token"])).status_code == 401


async def test_disabling_a_user_ends_their_refresh_tokens(
    app: FastAPI, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await create_admin(app.state.settings, "root@example.com", lambda: PASSWORD)
    admin = {
        "Authorization": f"Bearer {(await login_tokens(http, 'root@example.com'))['access_token']}"
    }
    tokens = await login_tokens(http, "a@example.com")
    r = await refresh(http, tokens["refresh_token"])  # a working session, rotated once
    assert r.status_code == 200, r.text
    rotated = r.json()["refresh_token"]
    me = (await http.get(API + "/users/me", headers=auth)).json()["id"]
    r = await http.patch(f"{API}/users/{me}", headers=admin, json={"disabled": True})
    assert r.status_code == 200, r.text
    assert (await refresh(http, rotated)).status_code == 401
    # Enabled again, the old session stays ended: disabling revoked it, it did not just
    # refuse it while disabled.
    r = await http.patch(f"{API}/users/{me}", headers=admin, json={"disabled": False})
    assert r.status_code == 200, r.text
    assert (await refresh(http, rotated)).status_code == 401
    assert (await login_tokens(http, "a@example.com"))["refresh_token"]
