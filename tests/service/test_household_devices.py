"""A household's devices keep working whoever registered them: through the real gateway app
(every service, embedded stores and bus), an admin disables the member who registered a meter
and the meter's readings are still accepted; disabling the household's only owner stops every
device of the household (core.directory.DeviceContext.enabled)."""

from __future__ import annotations

import httpx

from energy_tracker.services.users.admins import ensure_admin
from tests.service.test_access_tokens import (
    API,
    PASSWORD,
    Gateway,
    client,
    gateway,  # noqa: F401 (the fixture)
    log_in,
    sign_up,
)


async def _send(http: httpx.AsyncClient, key: str, device_id: str, ts: int) -> int:
    r = await http.post(
        API + "/readings",
        json={"device_id": device_id, "ts": ts, "power_w": 100.0},
        headers={"X-Device-Key": key},
    )
    return r.status_code


async def _disable(http: httpx.AsyncClient, admin: dict[str, str], user: str, off: bool) -> None:
    r = await http.patch(API + f"/users/{user}", json={"disabled": off}, headers=admin)
    assert r.status_code == 200, r.text


async def test_a_households_devices_stop_only_without_an_active_owner(
    gateway: Gateway,  # noqa: F811
) -> None:
    async with gateway() as app, client(app) as http:
        await ensure_admin(app.state.users, "root@example.com", lambda: PASSWORD)
        root = await log_in(http, "root@example.com")
        ann = await sign_up(http, "ann@example.com")
        ben = await sign_up(http, "ben@example.com")
        home = (await http.get(API + "/households", headers=ann)).json()["items"][0]["id"]
        r = await http.post(
            API + f"/households/{home}/members",
            json={"email": "ben@example.com", "role": "member"},
            headers=ann,
        )
        assert r.status_code == 201, r.text
        ben_id = r.json()["member"]["user_id"]
        ann_id = (await http.get(API + "/users/me", headers=ann)).json()["id"]
        # Ben, a member, registers the household's main meter; Ann a plug.
        r = await http.post(
            API + "/devices",
            json={"name": "meter", "type": "meter", "role": "grid", "household_id": home},
            headers=ben,
        )
        assert r.status_code == 201, r.text
        meter, meter_key = r.json()["id"], r.json()["api_key"]
        r = await http.post(API + "/devices", json={"name": "plug", "type": "plug"}, headers=ann)
        assert r.status_code == 201, r.text
        plug, plug_key = r.json()["id"], r.json()["api_key"]
        t = 1_780_000_000_000
        assert await _send(http, meter_key, meter, t) == 202

        # Ben's account disabled: the meter is the household's, whose owner Ann is active.
        await _disable(http, root, ben_id, True)
        assert await _send(http, meter_key, meter, t + 60_000) == 202
        assert await _send(http, plug_key, plug, t + 60_000) == 202

        # Ann, the only owner, disabled too: nobody answers for the household's devices.
        await _disable(http, root, ann_id, True)
        assert await _send(http, meter_key, meter, t + 120_000) == 401
        assert await _send(http, plug_key, plug, t + 120_000) == 401

        # Ann enabled again: both work again (Ben is still disabled).
        await _disable(http, root, ann_id, False)
        assert await _send(http, meter_key, meter, t + 180_000) == 202
        assert await _send(http, plug_key, plug, t + 180_000) == 202
