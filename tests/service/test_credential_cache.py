"""The credential cache (core/credentials.py) across two processes' apps over one metadata
database (each app its own cache, as two `serve` processes or two HTTP workers of `up` have):
answers are kept, so a device sending again costs no metadata query; a change made through one
app is refused at once there, and in the other as soon as it reads the change counter (once a
CHECK_EVERY_S, moved forward here on the cache's clock instead of waited for); what nothing
changed stays cached where the change was made.

Across real processes (MariaDB, two gateways): tests/e2e/test_split_users_devices.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from energy_tracker.app import create_app, migrate
from energy_tracker.config import SERVICE_NAMES
from energy_tracker.core.credentials import CHECK_EVERY_S, CredentialCache
from energy_tracker.core.rate_limits import parse_rate_limits
from tests.processes import embedded_settings

API = "/api/v1"
PASSWORD = "correct horse battery"
SECRET = "service-test-credential-cache-secret-0123456789"


@contextlib.asynccontextmanager
async def two_apps(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """Two gateway apps with every service on the same data directory; a client for each."""
    settings = embedded_settings(
        tmp_path, SECRET, redis_url=None, rate_limits=parse_rate_limits("off")
    )
    await migrate(settings)
    apps = [create_app(settings, SERVICE_NAMES, gateway=True) for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 40000))
            http = httpx.AsyncClient(transport=transport, base_url="http://gateway")
            clients.append(await stack.enter_async_context(http))
        yield tuple(clients)


def cache_of(http: httpx.AsyncClient) -> CredentialCache:
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: FastAPI = transport.app  # type: ignore[assignment]
    cache: CredentialCache = app.state.credentials
    return cache


def later(cache: CredentialCache, seconds: float) -> None:
    """Move the cache's clock forward (so it reads the change counter again)."""
    now = cache.clock
    cache.clock = lambda: now() + seconds


@contextlib.contextmanager
def statements(http: httpx.AsyncClient) -> Iterator[list[str]]:
    """The SQL statements the app's metadata database runs meanwhile."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    engine = transport.app.state.runtime.db.engine.sync_engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


class Asked:
    """Notes which look-ups the cache passes on to the real directory (which answers them)."""

    def __init__(self, cache: CredentialCache) -> None:
        self.cache, self.real, self.names = cache, cache.source, list[str]()

    def __enter__(self) -> list[str]:
        self.cache.source = self
        return self.names

    def __exit__(self, *_: object) -> None:
        self.cache.source = self.real

    def __getattr__(self, name: str) -> Any:
        answer = getattr(self.real, name)

        async def asked(*args: Any) -> Any:
            self.names.append(name)
            return await answer(*args)

        return asked


async def sign_up(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    creds = {"email": email, "password": PASSWORD}
    assert (await http.post(API + "/auth/register", json=creds)).status_code == 201
    r = await http.post(API + "/auth/login", json=creds)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def new_device(http: httpx.AsyncClient, auth: dict[str, str], name: str) -> tuple[str, str]:
    r = await http.post(API + "/devices", json={"name": name, "type": "plug"}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["api_key"]


async def post_reading(http: httpx.AsyncClient, key: str) -> int:
    reading = {"ts": int(time.time() * 1000) - 60_000, "power_w": 5.0}
    r = await http.post(API + "/readings", json=reading, headers={"X-Device-Key": key})
    return r.status_code


async def test_a_device_sending_again_costs_no_metadata_query(tmp_path: Path) -> None:
    async with two_apps(tmp_path) as (a, _):
        ada = await sign_up(a, "ada@example.com")
        keys = [(await new_device(a, ada, f"plug {i}"))[1] for i in range(5)]
        for key in keys:
            assert await post_reading(a, key) == 202
        later(cache_of(a), CHECK_EVERY_S * 30)  # long after a 5 s cache would have let go
        with Asked(cache_of(a)) as asked:
            for key in keys:
                assert await post_reading(a, key) == 202
        # One read of the change counter, and nothing else: no device, user or household.
        assert asked == ["credentials_version"]


async def test_a_disabled_device_is_refused_by_the_other_process_once_it_reads_the_counter(
    tmp_path: Path,
) -> None:
    async with two_apps(tmp_path) as (a, b):
        ada = await sign_up(a, "ada@example.com")
        device_id, key = await new_device(a, ada, "meter")
        _, other_key = await new_device(a, ada, "plug")
        assert await post_reading(b, key) == 202  # now in b's cache
        assert await post_reading(a, other_key) == 202  # and this one in a's

        r = await a.patch(API + f"/devices/{device_id}", json={"disabled": True}, headers=ada)
        assert r.status_code == 200, r.text
        assert await post_reading(a, key) == 401  # at once where it was changed
        later(cache_of(b), CHECK_EVERY_S)
        assert await post_reading(b, key) == 401  # in the other, once it reads the counter
        # Where the change was made, what it did not touch stays cached.
        later(cache_of(a), CHECK_EVERY_S)
        with Asked(cache_of(a)) as asked:
            assert await post_reading(a, other_key) == 202
        assert asked == ["credentials_version"]

        r = await a.patch(API + f"/devices/{device_id}", json={"disabled": False}, headers=ada)
        assert r.status_code == 200, r.text
        later(cache_of(b), 2 * CHECK_EVERY_S)
        assert await post_reading(b, key) == 202  # a cached refusal goes the same way


async def test_a_rotated_key_and_a_disabled_account_in_the_other_process(tmp_path: Path) -> None:
    async with two_apps(tmp_path) as (a, b):
        ada = await sign_up(a, "ada@example.com")
        device_id, old_key = await new_device(a, ada, "meter")
        assert await post_reading(b, old_key) == 202
        assert (await b.get(API + "/users/me", headers=ada)).status_code == 200

        r = await a.post(API + f"/devices/{device_id}/rotate-key", headers=ada)
        assert r.status_code == 200, r.text
        later(cache_of(b), CHECK_EVERY_S)
        assert await post_reading(b, old_key) == 401
        assert await post_reading(b, r.json()["api_key"]) == 202

        # An admin (made in the store, as `create-admin` does) disables ada through a.
        from energy_tracker.services.users.admins import ensure_admin

        transport = a._transport
        assert isinstance(transport, httpx.ASGITransport)
        users = transport.app.state.users  # type: ignore[attr-defined]
        await ensure_admin(users, "root@example.com", lambda: PASSWORD)
        creds = {"email": "root@example.com", "password": PASSWORD}
        root = {
            "Authorization": "Bearer "
            + (await a.post(API + "/auth/login", json=creds)).json()["access_token"]
        }
        me = (await b.get(API + "/users/me", headers=ada)).json()
        r = await a.patch(API + f"/users/{me['id']}", json={"disabled": True}, headers=root)
        assert r.status_code == 200, r.text
        later(cache_of(b), 2 * CHECK_EVERY_S)
        r = await b.get(API + "/users/me", headers=ada)
        assert r.status_code == 401, r.text


async def test_a_revoked_token_is_refused_by_the_other_process(tmp_path: Path) -> None:
    async with two_apps(tmp_path) as (a, b):
        ada = await sign_up(a, "ada@example.com")
        made = await a.post(
            API + "/users/me/tokens", json={"name": "ha", "scope": "read"}, headers=ada
        )
        assert made.status_code == 201, made.text
        token = {"Authorization": f"Bearer {made.json()['token']}"}
        assert (await b.get(API + "/devices", headers=token)).status_code == 200

        r = await a.delete(API + f"/users/me/tokens/{made.json()['id']}", headers=ada)
        assert r.status_code == 204, r.text
        assert (await a.get(API + "/devices", headers=token)).status_code == 401
        later(cache_of(b), CHECK_EVERY_S)
        r = await b.get(API + "/devices", headers=token)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("own", [True, False])
async def test_the_counter_is_read_at_most_once_a_second(tmp_path: Path, own: bool) -> None:
    async with two_apps(tmp_path) as (a, b):
        ada = await sign_up(a, "ada@example.com")
        _, key = await new_device(a, ada, "meter")
        http = a if own else b
        assert await post_reading(http, key) == 202
        later(cache_of(http), CHECK_EVERY_S)
        with statements(http) as seen:
            for _ in range(20):
                assert await post_reading(http, key) == 202
        assert len([s for s in seen if "CREDENTIAL_CHANGES" in s]) == 1, seen


async def test_new_devices_sending_together_share_their_look_ups(tmp_path: Path) -> None:
    async with two_apps(tmp_path) as (a, b):
        ada = await sign_up(a, "ada@example.com")
        keys = [(await new_device(a, ada, f"plug {i}"))[1] for i in range(30)]
        with Asked(cache_of(b)) as asked:
            statuses = await asyncio.gather(*(post_reading(b, key) for key in keys))
        assert statuses == [202] * 30
        # Each key looked up once, most of them together with others.
        assert 1 <= asked.count("devices_for_key_digests") < 30, asked
