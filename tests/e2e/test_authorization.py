"""Who may call what, through a running `up` process.

The matrix is generated from the app's route table: every /api/v1 operation create_app builds is
called as each principal below, and must answer the status RULES gives for it. An operation
without a rule fails the test, so a new endpoint cannot ship without deciding who may call it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest

from energy_tracker.app import create_app
from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.services.gateway.routes import API_PREFIX
from tests.e2e.accounts import (
    PASSWORD,
    items_when,
    logged_in,
    new_device,
    post_reading,
    rule_body,
    status_when,
)
from tests.forged_tokens import forged_tokens
from tests.processes import ServiceProcess, embedded_env, run_command, running

SECRET = "e2e-authorization-secret-0123456789-0123456789"
# The household roles, someone of another household, an admin (a member of none of these),
# and those who may not be let in at all.
PRINCIPALS = (
    "anonymous",
    "non_member",
    "viewer",
    "member",
    "owner",
    "admin",
    "other_device",
    "disabled_user",
)
GENEROUS = "user=100000/60s,device=100000/60s,anonymous=100000/60s,login=100000/60s"


@dataclass
class Account:
    email: str
    user_id: str
    headers: dict[str, str]


@dataclass
class World:
    """The principals, made once per process, and the household every target lives in (the
    owner's, where `member` and `viewer` are members); `fresh_*` make a target for one call."""

    http: httpx.Client
    api: str
    owner: Account
    member: Account
    viewer: Account
    other: Account
    admin: Account
    disabled: Account
    other_device_key: str
    disabled_device_key: str
    household_id: str = ""
    alert_id: str = ""
    rule_id: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    def headers(self, principal: str) -> dict[str, str]:
        return {
            "anonymous": {},
            "non_member": self.other.headers,
            "viewer": self.viewer.headers,
            "member": self.member.headers,
            "owner": self.owner.headers,
            "admin": self.admin.headers,
            "other_device": {"X-Device-Key": self.other_device_key},
            "disabled_user": self.disabled.headers,
        }[principal]

    def fresh_device(self) -> dict[str, Any]:
        r = self.http.post(
            self.api + "/devices",
            json={"name": "target", "type": "plug"},
            headers=self.owner.headers,
        )
        assert r.status_code == 201, r.text
        return r.json()

    def fresh_rule(self, device_id: str | None = None) -> str:
        r = self.http.post(
            self.api + "/alert-rules", json=rule_body(device_id), headers=self.owner.headers
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def fresh_access_token(self) -> str:
        r = self.http.post(
            self.api + "/users/me/tokens",
            json={"name": "target", "scope": "read"},
            headers=self.owner.headers,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def fresh_member(self) -> str:
        """A new account, made a member of the household."""
        email = _unique_email()
        r = self.http.post(self.api + "/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = self.http.post(
            self.api + f"/households/{self.household_id}/members",
            json={"email": email, "role": "member"},
            headers=self.owner.headers,
        )
        assert r.status_code == 201 and r.json()["status"] == "joined", r.text
        return str(r.json()["member"]["user_id"])

    def fresh_invitation(self) -> str:
        """An invitation of an e-mail none of the principals has."""
        r = self.http.post(
            self.api + f"/households/{self.household_id}/members",
            json={"email": _unique_email(), "role": "viewer"},
            headers=self.owner.headers,
        )
        assert r.status_code == 201 and r.json()["status"] == "invited", r.text
        return str(r.json()["invitation"]["id"])

    def fresh_refresh_token(self) -> str:
        r = self.http.post(
            self.api + "/auth/login", json={"email": self.owner.email, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        return r.json()["refresh_token"]


def expect(
    anonymous: int,
    non_member: int,
    viewer: int,
    member: int,
    owner: int,
    admin: int,
    other_device: int,
    disabled_user: int,
) -> dict[str, int]:
    return dict(
        zip(
            PRINCIPALS,
            (anonymous, non_member, viewer, member, owner, admin, other_device, disabled_user),
            strict=True,
        )
    )


@dataclass(frozen=True)
class Rule:
    """Expected status per principal, and how to make the body and the query of one call."""

    status: dict[str, int]
    body: Callable[[World, dict[str, str]], Any] | None = None
    query: Callable[[World], dict[str, str]] | None = None


def _household(w: World) -> dict[str, str]:
    return {"household_id": w.household_id}


# Shapes of answer. Every target is in the owner's household; someone of another household
# gets 404 (ids of others are never confirmed), a member whose role does not allow it 403.
PUBLIC_201 = expect(201, 201, 201, 201, 201, 201, 201, 201)
PUBLIC_200 = expect(200, 200, 200, 200, 200, 200, 200, 200)
SIGNED_IN_200 = expect(401, 200, 200, 200, 200, 200, 403, 401)
READ_200 = expect(401, 404, 200, 200, 200, 200, 403, 401)
OPERATE_200 = expect(401, 404, 403, 200, 200, 200, 403, 401)
OPERATE_201 = expect(401, 404, 403, 201, 201, 201, 403, 401)
OPERATE_204 = expect(401, 404, 403, 204, 204, 204, 403, 401)
MANAGE_200 = expect(401, 404, 403, 403, 200, 200, 403, 401)
MANAGE_201 = expect(401, 404, 403, 403, 201, 201, 403, 401)
MANAGE_204 = expect(401, 404, 403, 403, 204, 204, 403, 401)
ADMIN_200 = expect(401, 403, 403, 403, 403, 200, 403, 401)


def _unique_email() -> str:
    return f"new-{uuid.uuid4().hex[:10]}@example.com"


RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/auth/register"): Rule(
        PUBLIC_201, lambda w, p: {"email": _unique_email(), "password": PASSWORD}
    ),
    ("POST", "/auth/login"): Rule(
        PUBLIC_200, lambda w, p: {"email": w.owner.email, "password": PASSWORD}
    ),
    ("POST", "/auth/refresh"): Rule(
        PUBLIC_200, lambda w, p: {"refresh_token": w.fresh_refresh_token()}
    ),
    ("POST", "/auth/logout"): Rule(
        expect(401, 204, 204, 204, 204, 204, 403, 401), lambda w, p: {"refresh_token": "x" * 43}
    ),
    # A browser's sign-out: authorised by its session cookie and CSRF value, not by a bearer
    # token, so without them nobody gets in (the cookie flow: tests/service/test_dashboard_api.py).
    ("DELETE", "/auth/refresh"): Rule(expect(401, 401, 401, 401, 401, 401, 401, 401)),
    ("GET", "/users/me"): Rule(SIGNED_IN_200),
    ("PATCH", "/users/me"): Rule(SIGNED_IN_200, lambda w, p: {"name": "Someone"}),
    # Personal access tokens: a user's own, made and revoked by a password sign-in only (a
    # token's refusal: tests/service/test_access_tokens.py); an admin revokes none of another's.
    ("POST", "/users/me/tokens"): Rule(
        expect(401, 201, 201, 201, 201, 201, 403, 401), lambda w, p: {"name": "ha", "scope": "read"}
    ),
    ("GET", "/users/me/tokens"): Rule(SIGNED_IN_200),
    ("DELETE", "/users/me/tokens/{token_id}"): Rule(expect(401, 404, 404, 404, 204, 404, 403, 401)),
    ("GET", "/users"): Rule(ADMIN_200),
    ("PATCH", "/users/{user_id}"): Rule(ADMIN_200, lambda w, p: {"role": "user"}),
    ("GET", "/households"): Rule(SIGNED_IN_200),
    ("GET", "/households/{household_id}"): Rule(READ_200),
    ("PATCH", "/households/{household_id}"): Rule(MANAGE_200, lambda w, p: {"name": "Home"}),
    ("POST", "/households/{household_id}/members"): Rule(
        MANAGE_201, lambda w, p: {"email": _unique_email(), "role": "viewer"}
    ),
    ("PATCH", "/households/{household_id}/members/{user_id}"): Rule(
        MANAGE_200, lambda w, p: {"role": "viewer"}
    ),
    ("DELETE", "/households/{household_id}/members/{user_id}"): Rule(MANAGE_204),
    # Only the invited e-mail's account may accept: to everyone else it does not exist.
    ("POST", "/households/invitations/{invitation_id}/accept"): Rule(
        expect(401, 404, 404, 404, 404, 404, 403, 401)
    ),
    ("POST", "/devices"): Rule(
        OPERATE_201, lambda w, p: {"name": "new", "type": "meter", **_household(w)}
    ),
    ("GET", "/devices"): Rule(READ_200, query=_household),
    ("GET", "/devices/{device_id}"): Rule(READ_200),
    ("PATCH", "/devices/{device_id}"): Rule(OPERATE_200, lambda w, p: {"name": "renamed"}),
    ("DELETE", "/devices/{device_id}"): Rule(OPERATE_204),
    ("POST", "/devices/{device_id}/rotate-key"): Rule(OPERATE_200),
    # Readings name their device in the body: a key of another device, or a user who may not
    # send for it, gets 422 naming the item (DESIGN: a bad batch is refused whole, saying why).
    ("POST", "/readings"): Rule(
        expect(401, 422, 422, 202, 202, 202, 422, 401),
        lambda w, p: {"device_id": p["device_id"], "ts": int(time.time() * 1000), "power_w": 5.0},
    ),
    ("GET", "/devices/{device_id}/usage"): Rule(READ_200),
    ("GET", "/devices/{device_id}/readings"): Rule(READ_200),
    ("GET", "/devices/{device_id}/live"): Rule(READ_200),
    ("GET", "/usage"): Rule(READ_200, query=_household),
    ("POST", "/alert-rules"): Rule(OPERATE_201, lambda w, p: {**rule_body(None), **_household(w)}),
    ("POST", "/alert-rules/preview"): Rule(
        READ_200, lambda w, p: rule_body(w.fresh_device()["id"])
    ),
    ("GET", "/alert-rules"): Rule(READ_200, query=_household),
    ("GET", "/alert-rules/{rule_id}"): Rule(READ_200),
    ("PATCH", "/alert-rules/{rule_id}"): Rule(OPERATE_200, lambda w, p: {"name": "renamed"}),
    ("DELETE", "/alert-rules/{rule_id}"): Rule(OPERATE_204),
    ("GET", "/alerts"): Rule(READ_200, query=_household),
    ("GET", "/alerts/stream"): Rule(READ_200, query=_household),
    ("GET", "/alerts/{alert_id}"): Rule(READ_200),
    ("POST", "/alerts/{alert_id}/ack"): Rule(OPERATE_200),
    ("GET", "/insights/summary"): Rule(READ_200, query=_household),
    ("GET", "/insights/forecast"): Rule(READ_200, query=_household),
    ("GET", "/insights/anomalies"): Rule(READ_200, query=_household),
}


def api_operations() -> set[tuple[str, str]]:
    """(method, path after /api/v1) of every operation create_app builds for `up`."""
    app = create_app(Settings(data_dir=Path("unused")), SERVICE_NAMES, gateway=True)
    # FastAPI ≥ 0.120 nests included routers; iter_route_contexts flattens them (older: flat).
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: list[Any] = list(flatten(app.routes)) if flatten else app.routes
    return {
        (method, route.path.removeprefix(API_PREFIX))
        for route in routes
        if (getattr(route, "path", None) or "").startswith(API_PREFIX + "/")
        for method in set(getattr(route, "methods", None) or ()) - {"HEAD", "OPTIONS"}
    }


OPERATIONS = sorted(api_operations())


def test_every_operation_has_a_rule() -> None:
    missing = [op for op in OPERATIONS if op not in RULES]
    assert not missing, f"operations without an authorization rule in RULES: {missing}"
    stale = [op for op in RULES if op not in OPERATIONS]
    assert not stale, f"rules for operations that no longer exist: {stale}"


# -- the running process -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("authz")
    env = embedded_env(
        tmp, ET_JWT_SECRET=SECRET, ET_RATE_LIMITS=GENEROUS, ET_ADMIN_PASSWORD=PASSWORD
    )
    made = run_command(["create-admin", "root@example.com"], env)
    assert made.returncode == 0, made.stderr
    assert "admin root@example.com created" in made.stdout
    with running(["up"], env, tmp / "up.log") as proc:
        yield proc


def sign_up(http: httpx.Client, api: str, email: str) -> Account:
    r = http.post(api + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code in (201, 409), r.text
    return log_in(http, api, email)


def log_in(http: httpx.Client, api: str, email: str) -> Account:
    headers = logged_in(http, api, email)
    me = http.get(api + "/users/me", headers=headers).json()
    return Account(email, me["id"], headers)


@pytest.fixture(scope="module")
def world(up: ServiceProcess) -> Iterator[World]:
    api = up.url + API_PREFIX
    with httpx.Client(timeout=30.0) as http:
        owner = sign_up(http, api, "owner@example.com")
        member = sign_up(http, api, "member@example.com")
        viewer = sign_up(http, api, "viewer@example.com")
        other = sign_up(http, api, "other@example.com")
        admin = log_in(http, api, "root@example.com")
        disabled = sign_up(http, api, "disabled@example.com")
        (home,) = http.get(api + "/households", headers=owner.headers).json()["items"]
        assert home["role"] == "owner"
        for account, role in ((member, "member"), (viewer, "viewer")):
            r = http.post(
                api + f"/households/{home['id']}/members",
                json={"email": account.email, "role": role},
                headers=owner.headers,
            )
            assert r.status_code == 201 and r.json()["status"] == "joined", r.text
        other_device, other_key = new_device(http, api, other.headers, name="own", type="plug")
        assert post_reading(http, api, other_key, other_device).status_code == 202
        disabled_device, disabled_key = new_device(
            http, api, disabled.headers, name="own", type="plug"
        )
        assert post_reading(http, api, disabled_key, disabled_device).status_code == 202
        r = http.patch(
            api + f"/users/{disabled.user_id}", json={"disabled": True}, headers=admin.headers
        )
        assert r.status_code == 200 and r.json()["disabled"] is True
        w = World(http, api, owner, member, viewer, other, admin, disabled, other_key, disabled_key)
        w.household_id = home["id"]
        w.alert_id, w.rule_id = fire_an_alert(w)
        yield w


def fire_an_alert(w: World) -> tuple[str, str]:
    """An alert of the household's, fired by a reading over a zero threshold."""
    device = w.fresh_device()
    rule_id = w.fresh_rule(device["id"])
    assert post_reading(w.http, w.api, device["api_key"], device["id"]).status_code == 202
    items = items_when(w.http, w.api + "/alerts", w.owner.headers, {}, bool, timeout_s=60)
    assert items, "no alert fired within 60 s"
    return items[0]["id"], rule_id


def path_params(w: World, template: str) -> dict[str, str]:
    """A fresh target in the household for each id in the path (a call may delete it)."""
    params: dict[str, str] = {}
    if "{device_id}" in template:
        params["device_id"] = w.fresh_device()["id"]
    if "{rule_id}" in template:
        params["rule_id"] = w.fresh_rule()
    if "{alert_id}" in template:
        params["alert_id"] = w.alert_id
    if "{household_id}" in template:
        params["household_id"] = w.household_id
    if "{invitation_id}" in template:
        params["invitation_id"] = w.fresh_invitation()
    if template.startswith("/households/") and "{user_id}" in template:
        params["user_id"] = w.fresh_member()
    elif "{user_id}" in template:
        params["user_id"] = w.owner.user_id
    if "{token_id}" in template:
        params["token_id"] = w.fresh_access_token()
    return params


def call(w: World, method: str, template: str, principal: str) -> tuple[int, str]:
    """The status of one call (and its start, to explain a mismatch); streams are closed as
    soon as their status is known."""
    rule = RULES[(method, template)]
    params = path_params(w, template)
    if template == "/readings":
        params["device_id"] = w.fresh_device()["id"]
    body = rule.body(w, params) if rule.body else None
    query = rule.query(w) if rule.query else None
    url = w.api + template.format(**params)
    with w.http.stream(method, url, json=body, params=query, headers=w.headers(principal)) as r:
        text = "" if r.headers.get("content-type", "").startswith("text/event-stream") else r.read()
        return r.status_code, str(text)[:300]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op[0]} {op[1]}")
def test_authorization_matrix(world: World, operation: tuple[str, str]) -> None:
    method, template = operation
    if operation not in RULES:
        pytest.fail(f"{method} {template} has no rule in RULES")
    got = {p: call(world, method, template, p) for p in PRINCIPALS}
    wrong = {
        p: f"expected {RULES[operation].status[p]}, got {status}: {text}"
        for p, (status, text) in got.items()
        if status != RULES[operation].status[p]
    }
    assert not wrong, f"{method} {template}: {wrong}"


# -- identities that stop working at once ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(forged_tokens("x", secret=SECRET, issuer="energy-tracker")))
def test_a_forged_token_gets_401(world: World, name: str) -> None:
    token = forged_tokens(world.owner.user_id, secret=SECRET, issuer="energy-tracker")[name]
    r = world.http.get(world.api + "/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    r = world.http.get(world.api + "/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401  # the tampered "admin" token included


def test_a_disabled_users_device_key_stops_at_once(world: World) -> None:
    # Its reading was accepted before the account was disabled (see `world`).
    r = post_reading(world.http, world.api, world.disabled_device_key, "ignored")
    assert r.status_code == 401, r.text
    r = world.http.post(
        world.api + "/auth/login", json={"email": world.disabled.email, "password": PASSWORD}
    )
    assert r.status_code == 401


def test_a_rotated_key_stops_at_once(world: World) -> None:
    device = world.fresh_device()
    old = device["api_key"]
    assert post_reading(world.http, world.api, old, device["id"]).status_code == 202
    r = world.http.post(
        world.api + f"/devices/{device['id']}/rotate-key", headers=world.owner.headers
    )
    new = r.json()["api_key"]
    assert new != old
    assert post_reading(world.http, world.api, old, device["id"]).status_code == 401
    assert post_reading(world.http, world.api, new, device["id"]).status_code == 202
    assert (
        "api_key"
        not in world.http.get(
            world.api + f"/devices/{device['id']}", headers=world.owner.headers
        ).json()
    )


def test_a_disabled_device_stops_and_comes_back(world: World) -> None:
    device = world.fresh_device()
    url = world.api + f"/devices/{device['id']}"
    world.http.patch(url, json={"disabled": True}, headers=world.owner.headers)
    assert post_reading(world.http, world.api, device["api_key"], device["id"]).status_code == 401
    world.http.patch(url, json={"disabled": False}, headers=world.owner.headers)
    assert post_reading(world.http, world.api, device["api_key"], device["id"]).status_code == 202


def test_create_admin_promotes_and_a_demotion_applies_at_once(
    up: ServiceProcess, world: World
) -> None:
    user = sign_up(world.http, world.api, "promoted@example.com")
    assert world.http.get(world.api + "/users", headers=user.headers).status_code == 403
    env = {"ET_DATA_DIR": str(up.log_path.parent / "data"), "ET_DB_URL": ""}
    promoted = run_command(["create-admin", user.email], env)
    assert promoted.returncode == 0, promoted.stderr
    assert "is now an admin" in promoted.stdout
    # The token was issued to a plain user; the role is the account's, so it counts: within a
    # second (the command moves the credential change counter, which `up` reads once a second),
    # as the command is another process; a demotion through the API of this process counts at
    # once.
    users = world.api + "/users"
    assert status_when(lambda: world.http.get(users, headers=user.headers), 200) == 200
    r = world.http.patch(
        world.api + f"/users/{user.user_id}", json={"role": "user"}, headers=world.admin.headers
    )
    assert r.status_code == 200
    assert world.http.get(world.api + "/users", headers=user.headers).status_code == 403


def test_a_device_follows_its_owners_time_zone_unless_it_has_its_own(world: World) -> None:
    user = sign_up(world.http, world.api, "zoned@example.com")
    me = world.api + "/users/me"
    world.http.patch(me, json={"timezone": "Europe/Berlin"}, headers=user.headers)
    make = {"name": "heat pump", "type": "heat_pump"}
    follows = world.http.post(world.api + "/devices", json=make, headers=user.headers).json()
    own = world.http.post(
        world.api + "/devices", json={**make, "timezone": "Asia/Tokyo"}, headers=user.headers
    ).json()
    assert (follows["timezone"], own["timezone"]) == ("Europe/Berlin", "Asia/Tokyo")
    world.http.patch(me, json={"timezone": "America/New_York"}, headers=user.headers)
    listed = {
        d["id"]: d["timezone"]
        for d in world.http.get(world.api + "/devices", headers=user.headers).json()
    }
    assert listed == {follows["id"]: "America/New_York", own["id"]: "Asia/Tokyo"}
