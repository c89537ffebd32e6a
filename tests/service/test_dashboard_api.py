"""What the web dashboard needs from the API, on a real server (uvicorn, in process) running
every service behind the gateway on the embedded stores: the browser session (refresh token in
an HttpOnly cookie, CSRF-checked), the rule preview computed by the rule engine over stored
readings, and the dashboard's files with their cache and security headers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from energy_tracker.app import create_app, migrate
from energy_tracker.config import SERVICE_NAMES
from energy_tracker.services.gateway.dashboard import CSP, install_dashboard
from tests.processes import embedded_settings, free_port
from tests.service.alerting import eventually

PASSWORD = "correct horse battery"
REFRESH_PATH = "/api/v1/auth/refresh"


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = embedded_settings(
        tmp_path,
        "dashboard-api-test-secret-0123456789abcdef",
        http_port=free_port(),
        rate_limits=None,
    )
    await migrate(settings)
    app = create_app(settings, SERVICE_NAMES, gateway=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started or task.done()))
        assert server.started
        base = f"http://127.0.0.1:{settings.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tmp_path) as client:
        yield client


async def signed_in(http: httpx.AsyncClient, email: str = "ada@example.com") -> dict[str, str]:
    creds = {"email": email, "password": PASSWORD}
    assert (await http.post("/api/v1/auth/register", json=creds)).status_code == 201
    r = await http.post("/api/v1/auth/login", json=creds)
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# -- the browser session -----------------------------------------------------------------------


async def test_a_browser_session_keeps_its_refresh_token_in_an_httponly_cookie(
    http: httpx.AsyncClient,
) -> None:
    creds = {"email": "ada@example.com", "password": PASSWORD}
    await http.post("/api/v1/auth/register", json=creds)
    r = await http.post("/api/v1/auth/login", json={**creds, "refresh_in_cookie": True})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "token_type", "expires_in"}  # no refresh token
    cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
    assert "httponly" in cookies["et_refresh"]
    assert "samesite=strict" in cookies["et_refresh"]
    assert f"path={REFRESH_PATH}" in cookies["et_refresh"]
    assert "httponly" not in cookies["et_csrf"]  # the page reads it to prove where it runs
    csrf = http.cookies["et_csrf"]
    old_refresh = http.cookies["et_refresh"]

    # A forged request carries the cookie (were SameSite ignored) but cannot know the CSRF value.
    assert (await http.post(REFRESH_PATH)).status_code == 401
    assert (await http.post(REFRESH_PATH, headers={"X-CSRF-Token": "0" * 64})).status_code == 401

    r = await http.post(REFRESH_PATH, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()
    me = await http.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
    )
    assert me.json()["email"] == "ada@example.com"
    # The token rotated: the old one, with its own CSRF value, is spent.
    assert http.cookies["et_refresh"] != old_refresh
    stale = {"Cookie": f"et_refresh={old_refresh}", "X-CSRF-Token": csrf}
    async with httpx.AsyncClient(base_url=str(http.base_url)) as other:
        assert (await other.post(REFRESH_PATH, headers=stale)).status_code == 401

    # Signing out revokes it and clears the cookies.
    csrf = http.cookies["et_csrf"]
    kept = http.cookies["et_refresh"]
    r = await http.request("DELETE", REFRESH_PATH, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert "et_refresh" not in http.cookies
    replay = {"Cookie": f"et_refresh={kept}", "X-CSRF-Token": csrf}
    assert (await http.post(REFRESH_PATH, headers=replay)).status_code == 401


async def test_other_clients_keep_refresh_tokens_in_the_body(http: httpx.AsyncClient) -> None:
    creds = {"email": "bob@example.com", "password": PASSWORD}
    await http.post("/api/v1/auth/register", json=creds)
    r = await http.post("/api/v1/auth/login", json=creds)
    assert "set-cookie" not in r.headers
    token = r.json()["refresh_token"]
    r = await http.post(REFRESH_PATH, json={"refresh_token": token})
    assert r.status_code == 200 and r.json()["refresh_token"] != token


# -- the rule preview --------------------------------------------------------------------------


async def _stored(http: httpx.AsyncClient, auth: dict[str, str], device: str, n: int) -> None:
    async def all_there() -> bool:
        r = await http.get(f"/api/v1/devices/{device}/readings?limit=10000", headers=auth)
        return len(r.json()["items"]) == n

    await eventually(all_there)


async def test_the_preview_runs_the_rule_engine_over_the_last_week(
    http: httpx.AsyncClient,
) -> None:
    auth = await signed_in(http)
    r = await http.post("/api/v1/devices", json={"name": "kettle", "type": "plug"}, headers=auth)
    device = r.json()["id"]
    # One reading a minute, ten minutes ago on: under, over, peak, inside the hysteresis band,
    # cleared, over again.
    minute = 60_000
    t0 = (int(time.time() * 1000) // minute - 10) * minute
    watts = [1000, 2500, 2600, 1800, 1400, 2100]
    readings = [
        {"device_id": device, "ts": t0 + i * minute, "power_w": w} for i, w in enumerate(watts)
    ]
    r = await http.post("/api/v1/readings", json={"readings": readings}, headers=auth)
    assert r.status_code == 202
    await _stored(http, auth, device, len(watts))
    rule = {
        "name": "kettle on",
        "device_id": device,
        "metric": "power_w",
        "threshold": 2000,
        "clear_threshold": 1500,
    }
    r = await http.post("/api/v1/alert-rules/preview", json=rule, headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["observations"] == 6
    # Worked out by hand: fires at 2,500 W (minute 1), peaks at 2,600, holds at 1,800 (above
    # the clear threshold), resolves at 1,400 (minute 4), fires again at 2,100 (minute 5).
    starts = [(a["started_at"], a["resolved_at"], a["peak_value"]) for a in got["alerts"]]
    iso = _iso_utc
    assert starts == [
        (iso(t0 + minute), iso(t0 + 4 * minute), 2600.0),
        (iso(t0 + 5 * minute), None, 2100.0),
    ]
    # A cooldown of ten minutes keeps the second one from firing.
    r = await http.post(
        "/api/v1/alert-rules/preview", json={**rule, "cooldown_s": 600}, headers=auth
    )
    assert len(r.json()["alerts"]) == 1
    # Energy so far this hour: the six minutes come to well under 1 kWh, so nothing fires.
    energy = {**rule, "metric": "energy_kwh", "period": "hour", "threshold": 1.0}
    energy.pop("clear_threshold")
    r = await http.post("/api/v1/alert-rules/preview", json=energy, headers=auth)
    assert r.status_code == 200 and r.json()["alerts"] == []
    # Nothing stored, nothing sent: the rule does not exist.
    assert (await http.get("/api/v1/alert-rules", headers=auth)).json()["items"] == []


async def test_a_silence_preview_sees_the_gaps(http: httpx.AsyncClient) -> None:
    auth = await signed_in(http)
    r = await http.post("/api/v1/devices", json={"name": "freezer", "type": "plug"}, headers=auth)
    device = r.json()["id"]
    minute = 60_000
    t0 = (int(time.time() * 1000) // minute - 40) * minute
    # Quiet for 30 minutes, then 9, then (until now) about one.
    at = [t0, t0 + 30 * minute, t0 + 39 * minute]
    readings = [{"device_id": device, "ts": ts, "power_w": 80.0} for ts in at]
    assert (
        await http.post("/api/v1/readings", json={"readings": readings}, headers=auth)
    ).is_success
    await _stored(http, auth, device, len(at))
    rule = {"name": "freezer off", "device_id": device, "metric": "silence", "threshold": 600}
    r = await http.post("/api/v1/alert-rules/preview", json=rule, headers=auth)
    assert r.status_code == 200, r.text
    # By hand: the once-a-second check sees 601 s of silence at t0 + 601 s, and the next
    # reading, 30 minutes in, ends it; the 9-minute gap stays under the 10 allowed.
    assert [(a["started_at"], a["resolved_at"], a["peak_value"]) for a in r.json()["alerts"]] == [
        (_iso_utc(t0 + 601_000), _iso_utc(t0 + 30 * minute), 601.0)
    ]


async def test_a_preview_needs_one_of_your_devices(http: httpx.AsyncClient) -> None:
    auth = await signed_in(http)
    rule = {"name": "any", "metric": "power_w", "threshold": 1}
    r = await http.post("/api/v1/alert-rules/preview", json=rule, headers=auth)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "device_id", "message": "a preview needs one device"}
    ]
    r = await http.post(
        "/api/v1/alert-rules/preview", json={**rule, "device_id": "someone-elses"}, headers=auth
    )
    assert r.status_code == 404


def _iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- the dashboard's files ---------------------------------------------------------------------


def test_the_dashboard_is_served_with_its_cache_and_security_headers(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    page = b"<!doctype html><script type=module src=/assets/index-abc123.js></script>" * 20
    script = b"console.log('the dashboard');\n" * 50
    (tmp_path / "index.html").write_bytes(page)
    (tmp_path / "assets" / "index-abc123.js").write_bytes(script)
    app = FastAPI()
    install_dashboard(app, tmp_path)
    client = TestClient(app)

    r = client.get("/", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.content == page  # decoded by the client
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "no-cache"  # it names the current assets
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP

    r = client.get("/assets/index-abc123.js", headers={"Accept-Encoding": "identity"})
    assert r.content == script and "content-encoding" not in r.headers
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-type"].startswith("text/javascript")
    packed = client.get("/assets/index-abc123.js", headers={"Accept-Encoding": "gzip"})
    assert len(gzip.compress(script)) < len(script) and packed.content == script

    missing = client.get("/assets/index-old.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_dashboard_answers_head_and_revalidations(tmp_path: Path) -> None:
    """HEAD gives a GET's headers and length with no body; a GET naming the ETag it holds
    (If-None-Match) gets a 304 with no body; another encoding or a changed file does not match."""
    (tmp_path / "assets").mkdir()
    page = b"<!doctype html><script type=module src=/assets/app-1.js></script>" * 20
    (tmp_path / "index.html").write_bytes(page)
    (tmp_path / "assets" / "app-1.js").write_bytes(b"export const a = 1;\n" * 40)
    app = FastAPI()
    install_dashboard(app, tmp_path)
    client = TestClient(app)

    for url in ("/", "/assets/app-1.js"):
        for encoding in ("identity", "gzip"):
            got = client.get(url, headers={"Accept-Encoding": encoding})
            head = client.head(url, headers={"Accept-Encoding": encoding})
            assert head.status_code == 200 and head.content == b""
            for name in ("content-type", "cache-control", "etag", "vary"):
                assert head.headers[name] == got.headers[name], (url, name)
            # The length of what a GET sends: the gzip bytes when gzip was asked for.
            sent = got.headers.get("content-encoding")
            assert head.headers.get("content-encoding") == sent
            length = len(gzip.compress(got.content, 9, mtime=0)) if sent else len(got.content)
            assert int(head.headers["content-length"]) == length

            again = client.get(
                url, headers={"Accept-Encoding": encoding, "If-None-Match": got.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == got.headers["etag"]
            assert again.headers["cache-control"] == got.headers["cache-control"]
    plain = client.get("/", headers={"Accept-Encoding": "identity"}).headers["etag"]
    packed = client.get("/", headers={"Accept-Encoding": "gzip"}).headers["etag"]
    assert plain != packed  # two representations, two tags
    r = client.get("/", headers={"Accept-Encoding": "gzip", "If-None-Match": plain})
    assert r.status_code == 200 and r.content == page

    r = client.get("/", headers={"Accept-Encoding": "identity", "If-None-Match": f'"x", W/{plain}'})
    assert r.status_code == 304  # one of a list, compared weakly

    # A new build: the same URL, other bytes, so the old tag no longer matches.
    (tmp_path / "index.html").write_bytes(page + b"<!-- v2 -->")
    rebuilt = FastAPI()
    install_dashboard(rebuilt, tmp_path)
    r = TestClient(rebuilt).get(
        "/", headers={"Accept-Encoding": "identity", "If-None-Match": plain}
    )
    assert r.status_code == 200 and r.content.endswith(b"<!-- v2 -->")
    assert client.head("/assets/app-0.js").status_code == 404


def test_an_unbuilt_dashboard_says_how_to_build_it(tmp_path: Path) -> None:
    app = FastAPI()
    install_dashboard(app, tmp_path / "nothing")
    r = TestClient(app).get("/")
    assert r.status_code == 404
    assert "make web" in r.json()["error"]["message"]
