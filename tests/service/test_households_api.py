"""Households through their routes on a real server (users, devices, ingestion and alerts in
process, on the embedded bus and database, a real SMTP server): members and roles, invitations,
the bad input each refuses, what each role may do, and alert e-mails to the members who ask.
Every role x every route is walked by tests/e2e/test_authorization.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from energy_tracker.app import create_app
from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import household_invitations
from tests.alert_receivers import MailReceiver
from tests.service.alerting import eventually
from tests.service.test_alerts_api import Api, a_rule, running

PASSWORD = "correct horse battery"


async def _me(api: Api, auth: dict[str, str]) -> dict[str, Any]:
    return (await api.http.get("/users/me", headers=auth)).json()


async def _home(api: Api, auth: dict[str, str]) -> str:
    return str((await api.http.get("/households", headers=auth)).json()["items"][0]["id"])


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


async def test_members_roles_and_a_transfer(tmp_path: Any) -> None:
    async with running(tmp_path) as api:
        ann = await api.user("ann@example.com")
        ben = await api.user("ben@example.com")
        home = await _home(api, ann)
        members = f"/households/{home}/members"

        # Ben has an account: he joins at once, as a viewer, and sees the household.
        r = await api.http.post(
            members, json={"email": "Ben@Example.com", "role": "viewer"}, headers=ann
        )
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["member"]["role"]) == ("joined", "viewer")
        ben_id = r.json()["member"]["user_id"]
        listed = (await api.http.get("/households", headers=ben)).json()["items"]
        assert [(h["id"] == home, h["role"]) for h in listed] == [
            (False, "owner"),
            (True, "viewer"),
        ]

        # A viewer reads but changes nothing.
        device = await api.device(ann)
        assert (await api.http.get(f"/devices/{device}", headers=ben)).status_code == 200
        r = await api.http.patch(f"/devices/{device}", json={"name": "x"}, headers=ben)
        assert _error(r, 403)["code"] == "forbidden"
        r = await api.http.post(
            "/devices", json={"name": "x", "type": "plug", "household_id": home}, headers=ben
        )
        assert r.status_code == 403
        assert (
            await api.http.patch(f"/households/{home}", json={"name": "x"}, headers=ben)
        ).status_code == 403

        # Promoted to member, Ben manages devices and rules, but not the household.
        r = await api.http.patch(f"{members}/{ben_id}", json={"role": "member"}, headers=ann)
        assert r.status_code == 200 and r.json()["role"] == "member"
        r = await api.http.patch(f"/devices/{device}", json={"name": "fridge"}, headers=ben)
        assert r.status_code == 200 and r.json()["household_id"] == home
        r = await api.http.post("/alert-rules", json=a_rule(device), headers=ben)
        assert r.status_code == 201 and r.json()["household_id"] == home
        r = await api.http.post(
            members, json={"email": "x@example.com", "role": "viewer"}, headers=ben
        )
        assert r.status_code == 403

        # The only owner can neither step down nor leave: 409 naming the role.
        ann_id = (await _me(api, ann))["id"]
        error = _error(
            await api.http.patch(f"{members}/{ann_id}", json={"role": "member"}, headers=ann), 409
        )
        assert error["details"] == [{"field": "role", "message": "the household's only owner"}]
        _error(await api.http.delete(f"{members}/{ann_id}", headers=ann), 409)

        # Making Ben owner transfers the household: Ann becomes a member, at once.
        r = await api.http.patch(f"{members}/{ben_id}", json={"role": "owner"}, headers=ann)
        assert r.status_code == 200 and r.json()["role"] == "owner"
        roles = {
            m["email"]: m["role"]
            for m in (await api.http.get(f"/households/{home}", headers=ben)).json()["members"]
        }
        assert roles == {"ben@example.com": "owner", "ann@example.com": "member"}
        assert (
            await api.http.patch(f"/households/{home}", json={"name": "x"}, headers=ann)
        ).status_code == 403

        # Ann leaves (deleting herself); the household is Ben's alone and gone from her list.
        assert (await api.http.delete(f"{members}/{ann_id}", headers=ann)).status_code == 204
        assert (await api.http.get(f"/devices/{device}", headers=ann)).status_code == 404
        assert home not in [
            h["id"] for h in (await api.http.get("/households", headers=ann)).json()["items"]
        ]


async def test_bad_input_is_a_clear_4xx(tmp_path: Any) -> None:
    async with running(tmp_path) as api:
        cat = await api.user("cat@example.com")
        dan = await api.user("dan@example.com")
        home = await _home(api, cat)
        members = f"/households/{home}/members"

        error = _error(
            await api.http.post(
                members, json={"email": "cat@example.com", "role": "member"}, headers=cat
            ),
            422,
        )
        assert error["details"] == [{"field": "email", "message": "that is you"}]
        error = _error(
            await api.http.post(
                members, json={"email": "x@example.com", "role": "boss"}, headers=cat
            ),
            422,
        )
        assert [d["field"] for d in error["details"]] == ["role"]
        # owner is given by a transfer, never by an invitation
        _error(
            await api.http.post(
                members, json={"email": "x@example.com", "role": "owner"}, headers=cat
            ),
            422,
        )
        dan_id = (await _me(api, dan))["id"]
        error = _error(
            await api.http.patch(f"{members}/{dan_id}", json={"role": "admin"}, headers=cat), 422
        )
        assert [d["field"] for d in error["details"]] == ["role"]
        # Dan is not a member: 404, and Dan cannot see Cat's household at all.
        _error(
            await api.http.patch(f"{members}/{dan_id}", json={"role": "viewer"}, headers=cat), 404
        )
        _error(await api.http.get(f"/households/{home}", headers=dan), 404)
        _error(
            await api.http.post(
                members, json={"email": "dan@example.com", "role": "member"}, headers=dan
            ),
            404,
        )
        # Another household's id in a query or body: 404 naming the field.
        error = _error(
            await api.http.get("/devices", params={"household_id": home}, headers=dan), 404
        )
        assert error["details"] == [
            {"field": "household_id", "message": "not one of your households"}
        ]
        error = _error(
            await api.http.post(
                "/devices", json={"name": "x", "type": "plug", "household_id": home}, headers=dan
            ),
            404,
        )
        assert error["details"][0]["field"] == "household_id"
        # Joined twice: 409.
        assert (
            await api.http.post(
                members, json={"email": "dan@example.com", "role": "member"}, headers=cat
            )
        ).status_code == 201
        _error(
            await api.http.post(
                members, json={"email": "dan@example.com", "role": "viewer"}, headers=cat
            ),
            409,
        )
        # Settings are checked as on PATCH /users/me.
        error = _error(
            await api.http.patch(
                f"/households/{home}", json={"timezone": "Mars/Olympus"}, headers=cat
            ),
            422,
        )
        assert [d["field"] for d in error["details"]] == ["timezone"]


async def test_an_invitation_joins_on_registering_and_expires(tmp_path: Any) -> None:
    async with running(tmp_path) as api:
        eve = await api.user("eve@example.com")
        home = await _home(api, eve)
        members = f"/households/{home}/members"
        r = await api.http.post(
            members, json={"email": "fay@example.com", "role": "viewer"}, headers=eve
        )
        assert r.status_code == 201 and r.json()["status"] == "invited", r.text
        invitation = r.json()["invitation"]
        expires = datetime.fromisoformat(invitation["expires_at"])
        assert (
            timedelta(days=7) - timedelta(minutes=1)
            < expires - datetime.now(UTC)
            <= timedelta(days=7)
        )
        pending = (await api.http.get(f"/households/{home}", headers=eve)).json()["invitations"]
        assert [i["email"] for i in pending] == ["fay@example.com"]

        # An invitation of gil@ that is eight days old by the time gil registers.
        r = await api.http.post(
            members, json={"email": "gil@example.com", "role": "member"}, headers=eve
        )
        old = r.json()["invitation"]["id"]
        db = Database(api.settings.effective_db_url)
        await db.start()
        try:
            async with db.begin() as conn:
                await conn.execute(
                    update(household_invitations)
                    .where(household_invitations.c.id == old)
                    .values(expires_at=datetime.now(UTC) - timedelta(days=1))
                )
        finally:
            await db.stop()

        fay = await api.user("fay@example.com")
        roles = {
            h["id"]: h["role"]
            for h in (await api.http.get("/households", headers=fay)).json()["items"]
        }
        assert roles[home] == "viewer" and len(roles) == 2
        gil = await api.user("gil@example.com")
        roles = {
            h["id"]: h["role"]
            for h in (await api.http.get("/households", headers=gil)).json()["items"]
        }
        assert home not in roles
        # Accepting it now: 410, saying it expired; someone else's invitation: 404.
        error = _error(
            await api.http.post(f"/households/invitations/{old}/accept", headers=gil), 410
        )
        assert "expired" in error["message"]
        _error(await api.http.post(f"/households/invitations/{old}/accept", headers=fay), 404)
        # Fay's was accepted when she registered.
        _error(
            await api.http.post(f"/households/invitations/{invitation['id']}/accept", headers=fay),
            409,
        )


async def test_the_deprecated_profile_settings_are_the_own_households(tmp_path: Any) -> None:
    async with running(tmp_path) as api:
        hal = await api.user("hal@example.com")
        r = await api.http.patch(
            "/users/me",
            json={"timezone": "Europe/Berlin", "tariff": {"type": "flat", "price_per_kwh": 0.3}},
            headers=hal,
        )
        assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin"
        home = (await api.http.get(f"/households/{await _home(api, hal)}", headers=hal)).json()
        assert (home["timezone"], home["tariff"]) == (
            "Europe/Berlin",
            {"type": "flat", "price_per_kwh": 0.3},
        )
        r = await api.http.patch(f"/households/{home['id']}", json={"currency": "GBP"}, headers=hal)
        assert (await _me(api, hal))["currency"] == "GBP"


def test_the_openapi_document_marks_the_profile_settings_deprecated(tmp_path: Any) -> None:
    app = create_app(Settings(data_dir=tmp_path), SERVICE_NAMES, gateway=True)
    schema = app.openapi()
    body = schema["paths"]["/api/v1/users/me"]["patch"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert {k for k, v in properties.items() if v.get("deprecated")} == {
        "timezone",
        "currency",
        "tariff",
    }
    assert not properties["name"].get("deprecated")


async def test_alert_e_mails_go_to_every_member_who_asks(tmp_path: Any) -> None:
    with MailReceiver() as mailbox:
        async with running(tmp_path, smtp_url=mailbox.url) as api:
            ivy = await api.user("ivy@example.com")
            jon = await api.user("jon@example.com")
            kim = await api.user("kim@example.com")
            home = await _home(api, ivy)
            members = f"/households/{home}/members"
            for email, role in (("jon@example.com", "viewer"), ("kim@example.com", "member")):
                r = await api.http.post(members, json={"email": email, "role": role}, headers=ivy)
                assert r.status_code == 201
            jon_id, kim_id = (await _me(api, jon))["id"], (await _me(api, kim))["id"]
            # Jon (a viewer) asks for alert e-mails himself; Kim does not.
            r = await api.http.patch(
                f"{members}/{jon_id}", json={"notify_email": True}, headers=jon
            )
            assert r.status_code == 200 and r.json()["notify_email"] is True
            # ...and may not change Kim's.
            r = await api.http.patch(
                f"{members}/{kim_id}", json={"notify_email": True}, headers=jon
            )
            assert r.status_code == 403
            device = await api.device(ivy)
            rule = a_rule(device, channels=[])
            assert (await api.http.post("/alert-rules", json=rule, headers=ivy)).status_code == 201
            now = int(time.time() * 1000)
            readings = [{"device_id": device, "ts": now - 1000, "power_w": 2600.0}]
            r = await api.http.post("/readings", json={"readings": readings}, headers=ivy)
            assert r.status_code == 202

            async def mailed() -> bool:
                return len(mailbox.messages) >= 1

            await eventually(mailed)
            assert [m["To"] for m in mailbox.messages] == ["jon@example.com"]
            assert "kettle on" in str(mailbox.messages[0]["Subject"])
