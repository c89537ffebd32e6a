"""The authorization tables of `core.authz`: decisions on made-up callers, and the README
showing exactly what the code holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_tracker.core.auth import Identity
from energy_tracker.core.authz import GRANTS, ROLES, ROUTES, Action, Caller, Need, allows
from energy_tracker.core.errors import ApiError

README = Path(__file__).parents[2] / "README.md"
HOME, AWAY = "home", "away"


def _caller(role: str | None, action: Action, admin: bool = False) -> Caller:
    households = ((HOME, role),) if role else ()
    return Caller(
        Identity("user", "u", "admin" if admin else "user", households=households), action
    )


@pytest.mark.parametrize(
    ("role", "action", "status"),
    [
        ("viewer", Action.READ, None),
        ("viewer", Action.OPERATE, 403),
        ("member", Action.OPERATE, None),
        ("member", Action.MANAGE, 403),
        ("owner", Action.MANAGE, None),
        (None, Action.READ, 404),
    ],
)
def test_a_household_action_is_allowed_refused_or_not_found(
    role: str | None, action: Action, status: int | None
) -> None:
    caller = _caller(role, action)
    if status is None:
        assert caller.check(HOME, "device") == HOME
        return
    with pytest.raises(ApiError) as raised:
        caller.check(HOME, "device")
    assert raised.value.status == status


def test_another_households_things_are_not_found_even_for_an_owner() -> None:
    with pytest.raises(ApiError) as raised:
        _caller("owner", Action.READ).check(AWAY, "device")
    assert raised.value.status == 404
    assert _caller(None, Action.MANAGE, admin=True).check(AWAY, "device") == AWAY


def test_listing_covers_every_readable_household_or_the_one_named() -> None:
    caller = Caller(
        Identity("user", "u", households=((HOME, "owner"), (AWAY, "viewer"))), Action.READ
    )
    assert caller.scope(None) == [HOME, AWAY]
    assert caller.scope(AWAY) == [AWAY]
    assert _caller(None, Action.READ, admin=True).scope(None) is None
    with pytest.raises(ApiError) as raised:
        _caller("owner", Action.READ).scope(AWAY)
    assert raised.value.details == [
        {"field": "household_id", "message": "not one of your households"}
    ]


def test_something_new_goes_into_the_callers_own_household_by_default() -> None:
    assert _caller("member", Action.OPERATE).home(None) == HOME
    with pytest.raises(ApiError) as raised:
        _caller(None, Action.OPERATE).home(None)
    assert raised.value.status == 422


def test_only_the_owner_manages_and_only_a_viewer_cannot_operate() -> None:
    assert [r for r in ROLES if Action.MANAGE in GRANTS[r]] == ["owner"]
    assert [r for r in ROLES if Action.OPERATE in GRANTS[r]] == ["owner", "member"]
    assert all(Action.READ in GRANTS[r] for r in ROLES)
    identity = Identity("user", "u", households=((HOME, "viewer"),))
    assert allows(identity, HOME, Action.READ) and not allows(identity, HOME, Action.OPERATE)


def _mark(allowed: bool) -> str:
    return "yes" if allowed else "no"


def test_the_readme_shows_the_tables_of_the_code() -> None:
    text = README.read_text()
    for role in ROLES:
        row = f"| {role} | " + " | ".join(_mark(a in GRANTS[role]) for a in Action) + " |"
        assert row in text, f"README lacks the grants row {row!r}"
    for (method, path), rule in ROUTES.items():
        need = rule.action.value if rule.need is Need.HOUSEHOLD and rule.action else rule.need
        row = f"| `{method} {path}` | {need} |"
        assert row in text, f"README lacks the route row {row!r}"


def test_every_operation_of_the_app_has_a_rule_and_every_rule_an_operation() -> None:
    from tests.e2e.test_authorization import api_operations

    operations = api_operations()
    assert sorted(operations - ROUTES.keys()) == [], "operations missing from core.authz.ROUTES"
    assert sorted(ROUTES.keys() - operations) == [], "rules of operations that do not exist"


def test_what_changes_something_is_known_for_read_only_credentials() -> None:
    changing = {op for op, rule in ROUTES.items() if rule.changes}
    # Nothing read changes anything; previewing a rule stores nothing, so reading may do it.
    assert not [op for op in changing if op[0] == "GET"]
    assert ("POST", "/alert-rules/preview") not in changing
    assert {
        ("POST", "/devices"),
        ("POST", "/readings"),
        ("POST", "/alerts/{alert_id}/ack"),
        ("PATCH", "/households/{household_id}"),
        ("DELETE", "/households/{household_id}/members/{user_id}"),
        ("PATCH", "/users/me"),
    } <= changing
