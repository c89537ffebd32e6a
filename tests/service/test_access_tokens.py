"""Personal access tokens through the real gateway app (every service, on the embedded SQLite
stores and bus), in-process through httpx's ASGI transport: made and listed by a password
sign-in only, shown once and stored hashed, `read` ones refused any change, refused at once when
revoked, expired or their user disabled, their last use recorded at most once a minute, and a
rate-limit bucket each.

Across processes (the 5 s bound of a revocation, shared limits through Redis):
tests/e2e/test_split_users_devices.py; streams and the Home Assistant sensor:
tests/e2e/test_access_tokens.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, update

from energy_tracker.app import create_app, migrate
from energy_tracker.config import SERVICE_NAMES
from energy_tracker.core.auth import new_personal_token
from energy_tracker.core.credentials import TOKEN_USE_RESOLUTION_S
from energy_tracker.core.rate_limits import parse_rate_limits
from energy_tracker.core.stores.schema import access_tokens
from energy_tracker.services.users.admins import ensure_admin
from energy_tracker.services.users.store import MAX_ACCESS_TOKENS
from tests.e2e.accounts import rule_body
from tests.processes import embedded_settings

API = "/api/v1"
PASSWORD = "correct horse battery"
SECRET = "service-test-tokens-secret-0123456789-0123456789"
TOKEN_FIELDS = {"id", "name", "scope", "created_at", "expires_at", "last_used_at"}

Gateway = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    """Builds and starts the gateway app with every service, with these rate limits."""

    @contextlib.asynccontextmanager
    async def start(rate_limits: str = "user=100000/60s") -> AsyncIterator[FastAPI]:
        settings = embedded_settings(
            tmp_path, SECRET, redis_url=None, rate_limits=parse_rate_limits(rate_limits)
        )
        await migrate(settings)
        app = create_app(settings, SERVICE_NAMES, gateway=True)
        async with app.router.lifespan_context(app):
            yield app

    return start


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def sign_up(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    r = await http.post(API + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return await log_in(http, email)


async def log_in(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    r = await http.post(API + "/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def new_token(
    http: httpx.AsyncClient, auth: dict[str, str], scope: str, **body: Any
) -> dict[str, Any]:
    r = await http.post(
        API + "/users/me/tokens", json={"name": "ha", "scope": scope, **body}, headers=auth
    )
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


def refused(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"], r.text


async def test_a_token_is_shown_once_and_stored_hashed(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        made = await new_token(http, ada, "read", expires_in_days=30)
        assert set(made) == TOKEN_FIELDS | {"token"}
        assert made["token"].startswith("etp_")
        assert (made["name"], made["scope"], made["last_used_at"]) == ("ha", "read", None)
        created = datetime.fromisoformat(made["created_at"])
        assert datetime.fromisoformat(made["expires_at"]) == created + timedelta(days=30)

        listed = (await http.get(API + "/users/me/tokens", headers=ada)).json()
        assert listed == [{k: v for k, v in made.items() if k != "token"}]

        async with app.state.runtime.db.begin() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(select(access_tokens))]
        assert len(rows) == 1
        assert rows[0]["token_hash"] == hashlib.sha256(made["token"].encode()).hexdigest()
        assert made["token"] not in str(rows)
        # A token's use is visible in the list, never the token
        assert (await http.get(API + "/users/me", headers=bearer(made))).status_code == 200
        (listed_after,) = (await http.get(API + "/users/me/tokens", headers=ada)).json()
        assert listed_after["last_used_at"] is not None
        assert "token" not in listed_after


async def test_a_read_token_reads_and_changes_nothing(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        r = await http.post(API + "/devices", json={"name": "meter", "type": "meter"}, headers=ada)
        device = r.json()
        read, write = (
            bearer(await new_token(http, ada, "read")),
            bearer(await new_token(http, ada, "write")),
        )
        me = (await http.get(API + "/users/me", headers=ada)).json()
        assert (await http.get(API + "/users/me", headers=read)).json() == me
        for path in ("/devices", f"/devices/{device['id']}", "/usage", "/alerts"):
            assert (await http.get(API + path, headers=read)).status_code == 200, path
        reading = {"device_id": device["id"], "ts": int(time.time() * 1000), "power_w": 5.0}
        changes = [
            ("PATCH", "/users/me", {"name": "Mallory"}),
            ("POST", "/devices", {"name": "plug", "type": "plug"}),
            ("DELETE", f"/devices/{device['id']}", None),
            ("POST", f"/devices/{device['id']}/rotate-key", None),
            ("POST", "/readings", reading),
        ]
        for method, path, body in changes:
            r = await http.request(method, API + path, json=body, headers=read)
            refused(r, 403, "a read token cannot change anything")
        # A preview stores nothing: its route declares itself a read.
        rule = rule_body(device["id"])
        r = await http.post(API + "/alert-rules/preview", json=rule, headers=read)
        assert r.status_code == 200, r.text
        # A write token may do what its user may.
        r = await http.post(API + "/devices", json={"name": "plug", "type": "plug"}, headers=write)
        assert r.status_code == 201, r.text
        assert (await http.post(API + "/readings", json=reading, headers=write)).status_code == 202


async def test_only_a_password_sign_in_manages_tokens(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        made = await new_token(http, ada, "write")
        token = bearer(made)
        calls = [
            ("POST", "/users/me/tokens", {"name": "more", "scope": "write"}),
            ("GET", "/users/me/tokens", None),
            ("DELETE", f"/users/me/tokens/{made['id']}", None),
        ]
        for method, path, body in calls:
            r = await http.request(method, API + path, json=body, headers=token)
            refused(r, 403, "a personal access token cannot do this: sign in with your password")
        assert (await http.get(API + "/users/me", headers=token)).status_code == 200


async def test_a_revoked_token_is_refused_from_the_next_request(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        bob = await sign_up(http, "bob@example.com")
        made = await new_token(http, ada, "read")
        kept = await new_token(http, ada, "read")
        # Used, so its answer is in the credential cache: revoking must drop it from there.
        assert (await http.get(API + "/devices", headers=bearer(made))).status_code == 200
        url = API + f"/users/me/tokens/{made['id']}"
        assert (await http.delete(url, headers=bob)).status_code == 404  # not bob's to revoke
        assert (await http.delete(url, headers=ada)).status_code == 204
        refused(await http.get(API + "/devices", headers=bearer(made)), 401, "revoked")
        assert (await http.delete(url, headers=ada)).status_code == 404
        listed = (await http.get(API + "/users/me/tokens", headers=ada)).json()
        assert [t["id"] for t in listed] == [kept["id"]]
        assert (await http.get(API + "/devices", headers=bearer(kept))).status_code == 200


async def test_an_expired_token_is_refused_saying_so(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        made = await new_token(http, ada, "read", expires_in_days=1)
        past = datetime.now(UTC) - timedelta(minutes=1)  # as if a day had gone by
        async with app.state.runtime.db.begin() as conn:
            expire = update(access_tokens).where(access_tokens.c.id == made["id"])
            await conn.execute(expire.values(expires_at=past))
        refused(await http.get(API + "/devices", headers=bearer(made)), 401, "expired at")
        # Still listed, with its expiry, so that its owner sees why a script stopped.
        (listed,) = (await http.get(API + "/users/me/tokens", headers=ada)).json()
        assert datetime.fromisoformat(listed["expires_at"]) == past


async def test_a_disabled_users_tokens_stop_at_once_and_resume_when_enabled(
    gateway: Gateway,
) -> None:
    async with gateway() as app, client(app) as http:
        await ensure_admin(app.state.users, "root@example.com", lambda: PASSWORD)
        root = await log_in(http, "root@example.com")
        ada = await sign_up(http, "ada@example.com")
        token = bearer(await new_token(http, ada, "write"))
        ada_id = (await http.get(API + "/users/me", headers=token)).json()["id"]
        r = await http.patch(API + f"/users/{ada_id}", json={"disabled": True}, headers=root)
        assert r.status_code == 200, r.text
        refused(await http.get(API + "/users/me", headers=token), 401, "account disabled")
        await http.patch(API + f"/users/{ada_id}", json={"disabled": False}, headers=root)
        assert (await http.get(API + "/users/me", headers=token)).status_code == 200


async def test_forged_and_unknown_tokens_are_refused(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        genuine = (await new_token(http, ada, "write"))["token"]
        forged = {
            # Made with the real secret, but never issued: the store does not know it.
            "never issued": new_personal_token(uuid.uuid4(), secret=SECRET),
            "another secret": new_personal_token(uuid.uuid4(), secret=SECRET + "x"),
            "tampered": genuine[:-3] + ("A" if genuine[-3] != "A" else "B") + genuine[-2:],
            "prefix only": "etp_",
        }
        for name, token in forged.items():
            r = await http.get(API + "/users/me", headers={"Authorization": f"Bearer {token}"})
            refused(r, 401, "invalid personal access token")
            assert r.headers["www-authenticate"] == "Bearer", name


async def test_bad_token_requests_name_the_field(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        bad = [
            ({"name": "x", "scope": "admin"}, "scope"),
            ({"name": "", "scope": "read"}, "name"),
            ({"name": "x", "scope": "read", "expires_in_days": 0}, "expires_in_days"),
            ({"name": "x", "scope": "read", "expires_in_days": 100000}, "expires_in_days"),
            ({"scope": "read"}, "name"),
            ({"name": "x", "scope": "read", "token": "mine"}, "token"),
        ]
        for body, field in bad:
            r = await http.post(API + "/users/me/tokens", json=body, headers=ada)
            assert r.status_code == 422, r.text
            assert field in [d["field"] for d in r.json()["error"]["details"]], r.text
        for _ in range(MAX_ACCESS_TOKENS):
            await new_token(http, ada, "read")
        r = await http.post(
            API + "/users/me/tokens", json={"name": "one more", "scope": "read"}, headers=ada
        )
        refused(r, 409, f"already hold {MAX_ACCESS_TOKENS} tokens")


async def test_last_use_costs_a_write_at_most_once_a_minute_per_token(gateway: Gateway) -> None:
    async with gateway() as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        token = bearer(await new_token(http, ada, "read"))
        writes: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE ACCESS_TOKENS"):
                writes.append(statement)

        engine = app.state.runtime.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(5):
                assert (await http.get(API + "/devices", headers=token)).status_code == 200
            assert len(writes) == 1
            # A minute later (on the cache's clock) a use is written again.
            cache = app.state.credentials
            real = cache.clock
            cache.clock = lambda: real() + TOKEN_USE_RESOLUTION_S + 1
            assert (await http.get(API + "/devices", headers=token)).status_code == 200
            assert len(writes) == 2
        finally:
            event.remove(engine, "before_cursor_execute", count)


async def test_each_token_has_its_own_rate_limit(gateway: Gateway) -> None:
    async with gateway("user=3/1h") as app, client(app) as http:
        ada = await sign_up(http, "ada@example.com")
        first = bearer(await new_token(http, ada, "read"))
        second = bearer(await new_token(http, ada, "read"))  # ada has spent 2 of 3
        for _ in range(3):
            assert (await http.get(API + "/devices", headers=first)).status_code == 200
        r = await http.get(API + "/devices", headers=first)
        assert r.status_code == 429, r.text
        assert r.headers["x-ratelimit-limit"] == "3"
        # Neither the other token nor the owner's own session spent that bucket.
        assert (await http.get(API + "/devices", headers=second)).status_code == 200
        assert (await http.get(API + "/devices", headers=ada)).status_code == 200
