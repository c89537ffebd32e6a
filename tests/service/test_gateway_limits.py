"""The gateway's rate limits and CORS, through the real app (users, devices and ingestion on the
embedded SQLite stores and bus).

Requests go in-process through httpx's ASGI transport, which lets each test pick the client IP.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from energy_tracker.app import create_app, migrate
from energy_tracker.config import Settings
from energy_tracker.core.rate_limits import parse_rate_limits

API = "/api/v1"
PASSWORD = "correct horse battery"
LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")

Gateway = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    """Builds and starts a gateway app serving users, devices and ingestion with these settings."""

    @contextlib.asynccontextmanager
    async def start(rate_limits: str = "", **overrides: Any) -> AsyncIterator[FastAPI]:
        settings = Settings(
            data_dir=tmp_path / "data",
            db_url=None,
            bus_url=None,
            redis_url=None,
            jwt_secret="service-test-secret-0123456789-0123456789",
            rate_limits=parse_rate_limits(rate_limits),
            **overrides,
        )
        await migrate(settings)
        app = create_app(settings, ["users", "devices", "ingestion"], gateway=True)
        async with app.router.lifespan_context(app):
            yield app

    return start


def client(app: FastAPI, ip: str = "192.0.2.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def sign_up(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    r = await http.post(API + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = await http.post(API + "/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def assert_rate_limited(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit"] == str(limit)
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) >= 1
    assert r.headers["x-request-id"]


async def test_every_api_response_says_how_much_is_left(gateway: Gateway) -> None:
    async with gateway("user=5/1h") as app, client(app) as http:
        auth = await sign_up(http, "ada@example.com")
        r = await http.get(API + "/users/me", headers=auth)
        assert r.status_code == 200
        assert [r.headers[h] for h in LIMIT_HEADERS] == ["5", "4", "720"]
        assert (await http.get(API + "/users/me", headers=auth)).headers[
            "x-ratelimit-remaining"
        ] == "3"
        health = await http.get("/healthz")
        assert not any(h in health.headers for h in LIMIT_HEADERS)


async def test_a_user_is_limited_across_ips_and_others_are_not(gateway: Gateway) -> None:
    async with (
        gateway("user=3/1h") as app,
        client(app, "192.0.2.1") as a,
        client(app, "192.0.2.2") as b,
    ):
        ada, bob = await sign_up(a, "ada@example.com"), await sign_up(b, "bob@example.com")
        for http in (a, b, a):
            assert (await http.get(API + "/devices", headers=ada)).status_code == 200
        refused = await b.get(API + "/devices", headers=ada)
        assert_rate_limited(refused, 3)
        assert (await a.get(API + "/devices", headers=bob)).status_code == 200


async def test_anonymous_callers_are_limited_per_ip(gateway: Gateway) -> None:
    async with (
        gateway("anonymous=3/1h") as app,
        client(app, "192.0.2.1") as a,
        client(app, "192.0.2.2") as b,
    ):
        for _ in range(3):
            assert (await a.get(API + "/devices")).status_code == 401
        assert_rate_limited(await a.get(API + "/devices"), 3)
        # A forged or expired token buys no bucket of its own: it is anonymous.
        forged = {"Authorization": "Bearer not.a.token"}
        assert_rate_limited(await a.get(API + "/devices", headers=forged), 3)
        assert (await b.get(API + "/devices")).status_code == 401


async def test_failed_logins_are_limited_per_account_and_per_ip(gateway: Gateway) -> None:
    async with gateway("login=3/1h") as app:
        async with client(app, "192.0.2.1") as first:
            await sign_up(first, "ada@example.com")
            await sign_up(first, "bob@example.com")
            # Successes give their token back: many logins, no limit reached.
            for _ in range(5):
                r = await first.post(
                    API + "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
                )
                assert r.status_code == 200
            for _ in range(3):
                r = await first.post(
                    API + "/auth/login", json={"email": "ADA@example.com ", "password": "wrong!"}
                )
                assert r.status_code == 401
            # The IP has spent its failures: even bob's right password waits.
            right = {"email": "bob@example.com", "password": PASSWORD}
            assert_rate_limited(await first.post(API + "/auth/login", json=right), 3)
        async with client(app, "192.0.2.9") as elsewhere:
            # From another IP, ada's account is still locked, bob's is not.
            r = await elsewhere.post(
                API + "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
            )
            assert_rate_limited(r, 3)
            assert "failed logins" in r.json()["error"]["message"]
            assert (await elsewhere.post(API + "/auth/login", json=right)).status_code == 200


async def test_a_padded_login_body_still_counts_against_its_account(gateway: Gateway) -> None:
    # A login body over 16 KiB (padded with spaces) used to name no account, so guesses at one
    # password went unlimited per account. Bodies are bounded (64 KiB) before the limit reads
    # them, so a padded one counts like any other, and one past the bound is a 413.
    async with gateway("login=2/1h") as app:
        async with client(app, "192.0.2.1") as first:
            await sign_up(first, "ada@example.com")
        wrong = b'{"email": "ada@example.com", "password": "wrong!"' + b" " * 40_000 + b"}"
        headers = {"content-type": "application/json"}
        for ip in ("192.0.2.2", "192.0.2.3"):  # a new IP each time: only the account limits
            async with client(app, ip) as http:
                r = await http.post(API + "/auth/login", content=wrong, headers=headers)
                assert r.status_code == 401, r.text
        async with client(app, "192.0.2.4") as http:
            right = {"email": "ada@example.com", "password": PASSWORD}
            assert_rate_limited(await http.post(API + "/auth/login", json=right), 2)
            huge = wrong.replace(b" " * 40_000, b" " * 70_000)
            r = await http.post(API + "/auth/login", content=huge, headers=headers)
            assert r.status_code == 413


async def test_ipv6_clients_share_a_bucket_per_64_network(gateway: Gateway) -> None:
    # A host gets a /64 (2^64 addresses): a bucket per address would be a bucket per request.
    async with (
        gateway("anonymous=2/1h") as app,
        client(app, "2001:db8:1:2::1") as a,
        client(app, "2001:db8:1:2:ffff:1:2:3") as same_net,
        client(app, "2001:db8:1:3::1") as other_net,
    ):
        assert (await a.get(API + "/devices")).status_code == 401
        assert (await same_net.get(API + "/devices")).status_code == 401
        assert_rate_limited(await a.get(API + "/devices"), 2)
        assert_rate_limited(await same_net.get(API + "/devices"), 2)
        assert (await other_net.get(API + "/devices")).status_code == 401


async def test_a_device_key_gets_its_own_bucket_once_it_has_worked(gateway: Gateway) -> None:
    async with gateway("anonymous=6/1h,device=2/1h") as app, client(app) as http:
        auth = await sign_up(http, "ada@example.com")  # 2 anonymous tokens spent (register, login)
        r = await http.post(API + "/devices", json={"name": "meter", "type": "meter"}, headers=auth)
        key = {"X-Device-Key": r.json()["api_key"]}
        reading = {"ts": int(time.time() * 1000), "power_w": 100.0}
        # Until a response shows the key works, its requests are charged to the IP.
        first = await http.post(API + "/readings", json=reading, headers=key)
        assert first.status_code == 202, first.text
        assert first.headers["x-ratelimit-limit"] == "6"
        for remaining in ("1", "0"):
            r = await http.post(API + "/readings", json=reading, headers=key)
            assert r.status_code == 202
            assert r.headers["x-ratelimit-limit"] == "2"
            assert r.headers["x-ratelimit-remaining"] == remaining
        assert_rate_limited(await http.post(API + "/readings", json=reading, headers=key), 2)
        # Keys that never worked stay on the IP's bucket, which they drain: guessing keys buys
        # no fresh buckets, not even by passing a route that ignores device keys.
        guess = {"X-Device-Key": "etk_" + "x" * 43}
        new = {"email": "eve@example.com", "password": PASSWORD}
        assert (await http.post(API + "/auth/register", json=new, headers=guess)).status_code == 201
        for _ in range(2):
            r = await http.post(API + "/readings", json=reading, headers=guess)
            assert r.status_code == 401
        assert_rate_limited(await http.post(API + "/readings", json=reading, headers=guess), 6)


async def test_cors_is_off_by_default_and_names_the_configured_origins(gateway: Gateway) -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with gateway() as app, client(app) as http:
        r = await http.options(API + "/devices", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    async with gateway(cors_origins=("https://app.example.com",)) as app, client(app) as http:
        r = await http.options(API + "/devices", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-ratelimit-limit" not in r.headers  # a preflight costs no token
        r = await http.get(API + "/devices", headers={"Origin": "https://app.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-ratelimit-remaining" in r.headers["access-control-expose-headers"].lower()
        r = await http.options(
            API + "/devices", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_rate_limits_off_adds_no_headers(gateway: Gateway) -> None:
    async with gateway("off") as app, client(app) as http:
        r = await http.get(API + "/devices")
        assert r.status_code == 401
        assert "x-ratelimit-limit" not in r.headers
