"""Small steps the end-to-end tests repeat through the public API: an account, a device, a wait
for the usage service to have caught up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx


def signed_up(http: httpx.Client, api: str, **profile: Any) -> dict[str, str]:
    """A new account (with `profile` patched in); returns its Authorization header."""
    creds = {"email": f"u{uuid.uuid4().hex[:10]}@example.com", "password": "correct horse battery"}
    r = http.post(api + "/auth/register", json=creds)
    assert r.status_code == 201, r.text
    r = http.post(api + "/auth/login", json=creds)
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    if profile:
        r = http.patch(api + "/users/me", json=profile, headers=auth)
        assert r.status_code == 200, r.text
    return auth


def new_device(http: httpx.Client, api: str, auth: dict[str, str], **body: Any) -> tuple[str, str]:
    """(id, ingest key) of a new device of the caller."""
    r = http.post(api + "/devices", json={"name": "device", "type": "meter", **body}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["api_key"]


def usage_when(
    http: httpx.Client,
    url: str,
    auth: dict[str, str],
    params: dict[str, str],
    done: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 90.0,
) -> list[dict[str, Any]]:
    """The usage items once `done(items)` holds (the consumer works asynchronously), or the last
    ones seen when `timeout_s` runs out, for the caller's assertion to show."""
    deadline = time.monotonic() + timeout_s
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = http.get(url, params=params, headers=auth)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if done(items):
            break
        time.sleep(0.3)
    return items
