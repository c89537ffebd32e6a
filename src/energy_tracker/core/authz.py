"""Who may do what: the one authorization table of the API.

Two tables, each written once:
- GRANTS: what each household role may do (role x action).
- ROUTES: what each API operation needs: nobody (public), any signed-in account (its own
  things), an account signed in with its password (not a personal access token), an admin, or
  an action in the household the operation touches.

Every route takes the `authorized` dependency, which looks its own rule up in ROUTES, refuses
what needs no household (admin only, say) at once, and hands the route a `Caller` whose `check`
decides a household's things once the route knows which household they belong to. An admin may
do everything everywhere. A household the caller is not a member of is a 404, like an id that
does not exist, so the ids of others are never confirmed; a member whose role does not allow
the action gets 403. The README shows these tables (tests/unit/test_authz.py keeps them equal),
and tests/e2e/test_authorization.py calls every operation as every role.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Request

from energy_tracker.core.auth import Identity
from energy_tracker.core.errors import ApiError

API_PREFIX = "/api/v1"


class Action(StrEnum):
    """What an operation does to a household's things."""

    READ = "read"  # devices, usage, readings, live streams, rules, alerts, insights, members
    OPERATE = "operate"  # devices, readings, rules, acknowledging alerts
    MANAGE = "manage"  # the household's settings and its members


ROLES = ("owner", "member", "viewer")
GRANTS: dict[str, frozenset[Action]] = {
    "owner": frozenset({Action.READ, Action.OPERATE, Action.MANAGE}),
    "member": frozenset({Action.READ, Action.OPERATE}),
    "viewer": frozenset({Action.READ}),
}
CHANGES = frozenset({Action.OPERATE, Action.MANAGE})
"""The actions that change something (a read-only credential may do none of them)."""


class Need(StrEnum):
    """What an operation needs of its caller, beyond a household action."""

    PUBLIC = "public"  # nobody: registration, login, refresh
    ACCOUNT = "account"  # any signed-in account, acting on its own account
    ADMIN = "admin"  # an administrator
    # An account signed in with its password, not by a personal access token: what a token must
    # not do with itself (make, list or revoke tokens), so a leaked one cannot entrench itself.
    SESSION = "session"
    HOUSEHOLD = "household"  # an action in the household of the things it touches


@dataclass(frozen=True)
class Rule:
    need: Need
    action: Action | None = None  # for HOUSEHOLD; for ACCOUNT, whether it changes the account

    @property
    def changes(self) -> bool:
        return self.action in CHANGES


PUBLIC = Rule(Need.PUBLIC)
ACCOUNT_READ = Rule(Need.ACCOUNT, Action.READ)
ACCOUNT_CHANGE = Rule(Need.ACCOUNT, Action.OPERATE)
SESSION_READ = Rule(Need.SESSION, Action.READ)
SESSION_CHANGE = Rule(Need.SESSION, Action.OPERATE)
ADMIN_READ = Rule(Need.ADMIN, Action.READ)
ADMIN_CHANGE = Rule(Need.ADMIN, Action.MANAGE)
READ = Rule(Need.HOUSEHOLD, Action.READ)
OPERATE = Rule(Need.HOUSEHOLD, Action.OPERATE)
MANAGE = Rule(Need.HOUSEHOLD, Action.MANAGE)

ROUTES: dict[tuple[str, str], Rule] = {
    ("POST", "/auth/register"): PUBLIC,
    ("POST", "/auth/login"): PUBLIC,
    ("POST", "/auth/refresh"): PUBLIC,
    ("DELETE", "/auth/refresh"): PUBLIC,  # authorised by its session cookie and CSRF header
    ("POST", "/auth/logout"): ACCOUNT_CHANGE,
    ("GET", "/users/me"): ACCOUNT_READ,
    ("PATCH", "/users/me"): ACCOUNT_CHANGE,  # its deprecated settings: MANAGE of one's own home
    ("POST", "/users/me/tokens"): SESSION_CHANGE,
    ("GET", "/users/me/tokens"): SESSION_READ,
    ("DELETE", "/users/me/tokens/{token_id}"): SESSION_CHANGE,
    ("GET", "/users"): ADMIN_READ,
    ("PATCH", "/users/{user_id}"): ADMIN_CHANGE,
    ("GET", "/households"): ACCOUNT_READ,
    ("POST", "/households/invitations/{invitation_id}/accept"): ACCOUNT_CHANGE,
    ("GET", "/households/{household_id}"): READ,
    ("PATCH", "/households/{household_id}"): MANAGE,
    ("POST", "/households/{household_id}/members"): MANAGE,
    # Changing one's own e-mail notifications, or leaving, needs READ only: see the route.
    ("PATCH", "/households/{household_id}/members/{user_id}"): MANAGE,
    ("DELETE", "/households/{household_id}/members/{user_id}"): MANAGE,
    ("POST", "/devices"): OPERATE,
    ("GET", "/devices"): READ,
    ("GET", "/devices/{device_id}"): READ,
    ("PATCH", "/devices/{device_id}"): OPERATE,
    ("DELETE", "/devices/{device_id}"): OPERATE,
    ("POST", "/devices/{device_id}/rotate-key"): OPERATE,
    ("POST", "/readings"): OPERATE,  # or the device's own key
    ("GET", "/devices/{device_id}/usage"): READ,
    ("GET", "/devices/{device_id}/readings"): READ,
    ("GET", "/devices/{device_id}/live"): READ,
    ("GET", "/usage"): READ,
    ("POST", "/alert-rules"): OPERATE,
    ("POST", "/alert-rules/preview"): READ,
    ("GET", "/alert-rules"): READ,
    ("GET", "/alert-rules/{rule_id}"): READ,
    ("PATCH", "/alert-rules/{rule_id}"): OPERATE,
    ("DELETE", "/alert-rules/{rule_id}"): OPERATE,
    ("GET", "/alerts"): READ,
    ("GET", "/alerts/stream"): READ,
    ("GET", "/alerts/{alert_id}"): READ,
    ("POST", "/alerts/{alert_id}/ack"): OPERATE,
    ("GET", "/insights/summary"): READ,
    ("GET", "/insights/forecast"): READ,
    ("GET", "/insights/anomalies"): READ,
}


def role_in(identity: Identity, household_id: str) -> str | None:
    """The caller's role in a household; None when not a member."""
    return dict(identity.households).get(household_id)


def allows(identity: Identity, household_id: str, action: Action) -> bool:
    """Whether the caller may do `action` in the household (an admin: anywhere)."""
    if identity.is_admin:
        return True
    role = role_in(identity, household_id)
    return role is not None and action in GRANTS[role]


def readable(identity: Identity) -> list[str]:
    """The households whose things the caller may read, the caller's own first."""
    return [h for h, role in identity.households if Action.READ in GRANTS[role]]


def not_found(what: str, details: Any = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found", details)


@dataclass(frozen=True)
class Caller:
    """The signed-in caller of a route and the action its rule needs."""

    identity: Identity
    action: Action

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    def check(
        self,
        household_id: str | None,
        what: str,
        details: Any = None,
        action: Action | None = None,
    ) -> str:
        """`household_id` if the caller may do the route's action (or `action`) there; 404
        when the household is not theirs (or None: the thing does not exist), 403 when their
        role there does not allow it."""
        action = action or self.action
        if household_id is None or not (
            self.identity.is_admin or role_in(self.identity, household_id)
        ):
            raise not_found(what, details)
        if not allows(self.identity, household_id, action):
            role = role_in(self.identity, household_id)
            raise ApiError(
                403, "forbidden", f"a household {role} may not {action} here: {what}", details
            )
        return household_id

    def scope(self, household_id: str | None, field: str = "household_id") -> list[str] | None:
        """The households a listing covers: the one asked for (checked; 404 naming `field`),
        else every household the caller may read; None: everyone's (an admin asking for none)."""
        if household_id is not None:
            details = [{"field": field, "message": "not one of your households"}]
            return [self.check(household_id, "household", details)]
        return None if self.identity.is_admin else readable(self.identity)

    def home(self, household_id: str | None, field: str = "household_id") -> str:
        """The household something new goes into: the one named (checked), else the caller's
        own; 422 naming `field` when the caller belongs to none."""
        if household_id is not None:
            details = [{"field": field, "message": "not one of your households"}]
            return self.check(household_id, "household", details)
        if not self.identity.households:
            raise ApiError(
                422,
                "invalid",
                "you belong to no household: name one",
                [{"field": field, "message": "required: you belong to no household"}],
            )
        return self.check(self.identity.households[0][0], "household")


def route_rule(request: Request) -> Rule:
    """The rule of the operation `request` is routed to; an operation missing from ROUTES is a
    programming error (tests/e2e/test_authorization.py fails on it first)."""
    path = request.scope["route"].path_format.removeprefix(API_PREFIX)
    return ROUTES[(request.method, path)]
