"""The alerts routes on a real server (uvicorn, in process) with users, devices and ingestion
beside them on the embedded bus and database: rules and their validation, who sees what,
and readings that fire, notify, resolve, get acknowledged and stream as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from energy_tracker.app import create_app, migrate
from energy_tracker.config import Settings
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import alert_transitions
from energy_tracker.services.users.store import UserStore
from tests.alert_receivers import WebhookReceiver
from tests.processes import embedded_settings, free_port
from tests.service.alerting import eventually

SECRET = "api-test-secret"


@dataclass
class Api:
    http: httpx.AsyncClient
    settings: Settings

    async def user(self, email: str) -> dict[str, str]:
        """Register and sign in; the bearer header."""
        credentials = {"email": email, "password": "correct horse battery"}
        assert (await self.http.post("/auth/register", json=credentials)).status_code == 201
        r = await self.http.post("/auth/login", json=credentials)
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def device(self, auth: dict[str, str], name: str = "kettle plug") -> str:
        r = await self.http.post("/devices", json={"name": name, "type": "plug"}, headers=auth)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Api]:
    settings = embedded_settings(
        tmp_path, "alerts-api-test-secret-0123456789abcdef", http_port=free_port(), **options
    )
    await migrate(settings)
    app = create_app(settings, ["users", "devices", "ingestion", "alerts"], gateway=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.02)
        assert server.started
        base = f"http://127.0.0.1:{settings.http_port}/api/v1"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield Api(http, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running(tmp_path) as started:
        yield started


def a_rule(device_id: str | None, url: str = "http://127.0.0.1:9/hook", **fields: Any) -> dict:
    rule = {
        "name": "kettle on",
        "device_id": device_id,
        "metric": "power_w",
        "threshold": 2000,
        "clear_threshold": 1500,
        "severity": "critical",
        "channels": [{"type": "webhook", "url": url, "secret": SECRET}],
    }
    rule.update(fields)
    return rule


# -- rules -------------------------------------------------------------------------------------


async def test_a_rule_round_trip(api: Api) -> None:
    auth = await api.user("ada@example.com")
    device = await api.device(auth)
    body = a_rule(device, channels=[*a_rule(device)["channels"], {"type": "email", "to": "a@b.io"}])
    r = await api.http.post("/alert-rules", json=body, headers=auth)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert (rule["period"], rule["op"], rule["for_s"], rule["cooldown_s"]) == (
        "instant",
        "gt",
        0,
        0,
    )
    # The webhook secret is kept, never shown.
    assert rule["channels"] == [
        {"type": "webhook", "url": "http://127.0.0.1:9/hook", "to": None},
        {"type": "email", "url": None, "to": "a@b.io"},
    ]
    r = await api.http.patch(
        f"/alert-rules/{rule['id']}", json={"threshold": 2500, "for_s": 30}, headers=auth
    )
    assert (r.status_code, r.json()["threshold"], r.json()["for_s"]) == (200, 2500.0, 30)
    listed = (await api.http.get("/alert-rules", headers=auth)).json()["items"]
    assert [x["id"] for x in listed] == [rule["id"]]
    r = await api.http.patch(f"/alert-rules/{rule['id']}", json={"metric": "cost"}, headers=auth)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "metric", "message": "cannot be changed: create a new rule"}
    ]
    r = await api.http.patch(f"/alert-rules/{rule['id']}", json={"threshold": None}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "threshold"
    r = await api.http.patch(
        f"/alert-rules/{rule['id']}", json={"clear_threshold": 2600}, headers=auth
    )
    assert r.json()["error"]["details"] == [
        {"field": "clear_threshold", "message": "must be at or below the threshold"}
    ]
    assert (await api.http.delete(f"/alert-rules/{rule['id']}", headers=auth)).status_code == 204
    assert (await api.http.get(f"/alert-rules/{rule['id']}", headers=auth)).status_code == 404


# (what is changed in a good rule, the field named, words of the reason)
BAD_RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"metric": "voltage"}, "metric", "power_w"),
    ({"for_s": -5}, "for_s", "greater than or equal to 0"),
    ({"cooldown_s": -1}, "cooldown_s", "greater than or equal to 0"),
    ({"metric": "silence", "threshold": -60, "clear_threshold": None}, "threshold", "seconds"),
    ({"metric": "energy_kwh", "clear_threshold": None}, "period", "hour, day or month"),
    ({"clear_threshold": 2500}, "clear_threshold", "at or below the threshold"),
    (
        {"channels": [{"type": "webhook", "url": "ftp://example.com/x", "secret": SECRET}]},
        "channels.0.webhook.url",
        "http:// or https://",
    ),
    (
        {"channels": [{"type": "webhook", "url": "http://169.254.169.254/", "secret": SECRET}]},
        "channels.0.webhook.url",
        "cloud metadata",
    ),
    (
        {"channels": [{"type": "webhook", "url": "http://[fe80::1]:80/", "secret": SECRET}]},
        "channels.0.url",
        "link-local",
    ),
    (
        {"channels": [{"type": "webhook", "url": "http://169.254.10.1/", "secret": SECRET}]},
        "channels.0.url",
        "link-local",
    ),
    (
        {"channels": [{"type": "webhook", "url": "https://metadata.google.internal/"}]},
        "channels.0.webhook.url",
        "cloud metadata",
    ),
    ({"channels": [{"type": "email", "to": "not-an-email"}]}, "channels.0.email.to", "email"),
]


async def test_bad_rules_are_refused_with_the_reason(api: Api) -> None:
    auth = await api.user("ada@example.com")
    device = await api.device(auth)
    for change, field, reason in BAD_RULES:
        r = await api.http.post("/alert-rules", json=a_rule(device, **change), headers=auth)
        assert r.status_code == 422, (change, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid"
        assert any(d["field"] == field and reason in d["message"] for d in error["details"]), (
            change,
            error,
        )
    assert (await api.http.get("/alert-rules", headers=auth)).json()["items"] == []


async def test_a_rule_on_someone_elses_device_is_refused(api: Api) -> None:
    theirs = await api.device(await api.user("bob@example.com"))
    auth = await api.user("ada@example.com")
    r = await api.http.post("/alert-rules", json=a_rule(theirs), headers=auth)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "device_id", "message": "not one of this household's devices"}
    ]


async def test_loopback_webhooks_are_refused_when_private_targets_are_denied(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, webhook_deny_private=True) as api:
        auth = await api.user("ada@example.com")
        r = await api.http.post("/alert-rules", json=a_rule(None), headers=auth)
        assert r.status_code == 422
        (detail,) = r.json()["error"]["details"]
        assert detail["field"] == "channels.0.url"
        assert "loopback or private" in detail["message"]


async def test_users_see_their_own_rules_and_admins_see_all(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    rule = (await api.http.post("/alert-rules", json=a_rule(None), headers=ada)).json()
    path = f"/alert-rules/{rule['id']}"
    assert (await api.http.get(path, headers=bob)).status_code == 404
    assert (await api.http.patch(path, json={"name": "x"}, headers=bob)).status_code == 404
    assert (await api.http.delete(path, headers=bob)).status_code == 404
    assert (await api.http.get("/alert-rules", headers=bob)).json()["items"] == []
    await api.user("root@example.com")
    db = Database(api.settings.effective_db_url)
    await db.start()
    try:
        root = await UserStore(db).by_email("root@example.com")
        assert root is not None
        await UserStore(db).update(root.id, role="admin")
    finally:
        await db.stop()
    r = await api.http.post(
        "/auth/login", json={"email": "root@example.com", "password": "correct horse battery"}
    )
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert [
        x["id"] for x in (await api.http.get("/alert-rules", headers=admin)).json()["items"]
    ] == [rule["id"]]
    assert (await api.http.get(path, headers=admin)).status_code == 200


# -- alerts ----------------------------------------------------------------------------------------


async def _stream(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    into: list[dict],
    opened: asyncio.Event | None = None,
) -> None:
    """Collect the SSE events of /alerts/stream into `into` until cancelled; `opened` is set
    once the stream answered (from then on it misses nothing)."""
    async with http.stream("GET", "/alerts/stream", headers=auth, timeout=None) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()
        event: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if not line:
                if "data" in event:
                    into.append(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = orjson.loads(value) if name == "data" else value


async def test_readings_fire_notify_resolve_acknowledge_and_stream(
    api: Api, webhook: WebhookReceiver
) -> None:
    auth = await api.user("ada@example.com")
    device = await api.device(auth)
    other = await api.device(auth, "heat pump")
    rule = (
        await api.http.post("/alert-rules", json=a_rule(device, webhook.url), headers=auth)
    ).json()
    events: list[dict] = []
    opened = asyncio.Event()
    streaming = asyncio.create_task(_stream(api.http, auth, events, opened))
    try:
        await asyncio.wait_for(opened.wait(), 30)  # the stream is open before anything happens
        now = int(time.time() * 1000)

        async def send(*watts: float) -> None:
            readings = [
                {"device_id": device, "ts": now - 1000 * (len(watts) - i), "power_w": w}
                for i, w in enumerate(watts)
            ]
            r = await api.http.post("/readings", json={"readings": readings}, headers=auth)
            assert r.status_code == 202, r.text

        async def alerts(**params: str) -> list[dict]:
            r = await api.http.get("/alerts", params=params, headers=auth)
            assert r.status_code == 200, r.text
            return list(r.json()["items"])

        async def firing() -> bool:
            return len(await alerts(state="firing")) == 1

        await send(2100.0, 2600.0, 2300.0)
        await eventually(firing)
        (alert,) = await alerts(state="firing")
        assert (alert["rule_id"], alert["device_id"], alert["peak_value"]) == (
            rule["id"],
            device,
            2600.0,
        )
        (hit,) = await asyncio.to_thread(webhook.wait_for, 1)
        assert hit.signed_by(SECRET) and hit.json["alert"]["id"] == alert["id"]

        now += 10_000
        await send(1400.0)

        async def resolved() -> bool:
            return len(await alerts(state="resolved")) == 1

        await eventually(resolved)
        assert await alerts(device_id=other) == []
        r = await api.http.post(f"/alerts/{alert['id']}/ack", headers=auth)
        assert (r.status_code, r.json()["acknowledged"]) == (200, True)
        again = await api.http.post(f"/alerts/{alert['id']}/ack", headers=auth)
        assert again.json()["acknowledged_at"] == r.json()["acknowledged_at"]
        assert [a["id"] for a in await alerts(state="acknowledged")] == [alert["id"]]
        detail = (await api.http.get(f"/alerts/{alert['id']}", headers=auth)).json()
        assert [(d["event"], d["channel"]) for d in detail["deliveries"]] == [
            ("firing", "webhook"),
            ("resolved", "webhook"),
        ]
        assert detail["deliveries"][0]["history"][0]["ok"] is True

        async def streamed() -> bool:
            return len(events) >= 3

        await eventually(streamed)
        assert [e["event"] for e in events] == ["firing", "resolved", "acknowledged"]
        assert {e["data"]["alert_id"] for e in events} == {alert["id"]}
        assert len({e["id"] for e in events}) == 3
        stranger = await api.user("bob@example.com")
        assert (await api.http.get(f"/alerts/{alert['id']}", headers=stranger)).status_code == 404
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming


async def test_the_stream_pages_past_many_transitions_at_one_instant(api: Api) -> None:
    # 600 transitions recorded at one instant (a burst of rules firing in one evaluation): the
    # stream used to read the same first 500 again and again and never get past them.
    auth = await api.user("ada@example.com")
    device = await api.device(auth)
    rule = (await api.http.post("/alert-rules", json=a_rule(device), headers=auth)).json()
    now = int(time.time() * 1000)
    readings = [{"device_id": device, "ts": now - 1000, "power_w": 2600.0}]
    assert (
        await api.http.post("/readings", json={"readings": readings}, headers=auth)
    ).status_code == 202

    async def fired() -> bool:
        r = await api.http.get("/alerts", params={"state": "firing"}, headers=auth)
        return len(r.json()["items"]) == 1

    await eventually(fired)
    alert = (await api.http.get("/alerts", headers=auth)).json()["items"][0]
    owner = (await api.http.get("/users/me", headers=auth)).json()["id"]
    at = datetime.now(UTC)
    db = Database(api.settings.effective_db_url)
    await db.start()
    try:
        async with db.begin() as conn:
            await conn.execute(
                alert_transitions.insert(),
                [
                    {
                        "id": f"burst-{i:04d}",
                        "alert_id": alert["id"],
                        "owner_id": owner,
                        "household_id": alert["household_id"],
                        "state": "firing",
                        "payload": {"state": "firing", "rule_id": rule["id"], "n": i},
                        "recorded_at": at,
                        "published": True,
                    }
                    for i in range(600)
                ],
            )
    finally:
        await db.stop()
    events: list[dict] = []
    streaming = asyncio.create_task(_stream(api.http, auth, events))
    try:

        async def all_of_the_burst() -> bool:
            return len({e["id"] for e in events if e["id"].startswith("burst-")}) == 600

        await eventually(all_of_the_burst)
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
