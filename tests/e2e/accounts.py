"""Small steps the end-to-end tests repeat through the public API: an account, a device, a
reading, a wait for an asynchronous service (usage, alerts) to have caught up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from energy_tracker.core.credentials import CHECK_EVERY_S

PASSWORD = "correct horse battery"


def logged_in(http: httpx.Client, api: str, email: str) -> dict[str, str]:
    """The Authorization header of a login to the account `email` (password PASSWORD)."""
    r = http.post(api + "/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "bearer"
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def signed_up(
    http: httpx.Client, api: str, email: str | None = None, **profile: Any
) -> dict[str, str]:
    """A new account (a fresh address unless `email` is given, `profile` patched in); returns
    its Authorization header."""
    email = email or f"u{uuid.uuid4().hex[:10]}@example.com"
    r = http.post(api + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    auth = logged_in(http, api, email)
    if profile:
        r = http.patch(api + "/users/me", json=profile, headers=auth)
        assert r.status_code == 200, r.text
    return auth


def new_device(http: httpx.Client, api: str, auth: dict[str, str], **body: Any) -> tuple[str, str]:
    """(id, ingest key) of a new device of the caller."""
    r = http.post(api + "/devices", json={"name": "device", "type": "meter", **body}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["api_key"]


def rule_body(device_id: str | None) -> dict[str, Any]:
    """An alert rule that fires on any power at all: of one device, or (None) of all."""
    return {
        "name": "anything on",
        "device_id": device_id,
        "metric": "power_w",
        "period": "instant",
        "op": "gt",
        "threshold": 0,
        "severity": "info",
        "channels": [],
    }


def post_reading(
    http: httpx.Client, api: str, key: str, device_id: str | None = None, **fields: Any
) -> httpx.Response:
    """One reading of now (of `device_id` when given, `fields` added or changed) sent with the
    device key `key`."""
    reading = {"ts": int(time.time() * 1000), "power_w": 42.0, **fields}
    if device_id is not None:
        reading["device_id"] = device_id
    return http.post(api + "/readings", json=reading, headers={"X-Device-Key": key})


def status_when(
    send: Callable[[], httpx.Response], want: int, timeout_s: float = CHECK_EVERY_S + 10
) -> int:
    """The status `send()` answers once it is `want`, or the last one when `timeout_s` runs out.

    For a credential changed through another process: each process reads the change counter
    once every CHECK_EVERY_S, so the change arrives there within that, not at once.
    """
    deadline = time.monotonic() + timeout_s
    while (status := send().status_code) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def items_when(
    http: httpx.Client,
    url: str,
    auth: dict[str, str],
    params: dict[str, str],
    done: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 90.0,
    interval_s: float = 0.3,
) -> list[dict[str, Any]]:
    """The items of the list at `url` (usage, readings, alerts) once `done(items)` holds (the
    services behind it work asynchronously), or the last ones seen when `timeout_s` runs out,
    for the caller's assertion to show."""
    deadline = time.monotonic() + timeout_s
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = http.get(url, params=params, headers=auth)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if done(items):
            break
        time.sleep(interval_s)
    return items
