"""Contract of the households store (members, roles, invitations) on every metadata backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.services.users.household_store import HouseholdStore, LastOwner
from energy_tracker.services.users.store import UserStore

NOW = datetime(2029, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def users(metadata_db: Database) -> UserStore:
    return UserStore(metadata_db)


@pytest.fixture
def homes(metadata_db: Database) -> HouseholdStore:
    return HouseholdStore(metadata_db)


async def _home(homes: HouseholdStore, user_id: str) -> str:
    return (await homes.memberships(user_id))[0][0]


async def test_a_household_always_keeps_an_owner(users: UserStore, homes: HouseholdStore) -> None:
    ann = await users.create("ann@example.com", "h")
    ben = await users.create("ben@example.com", "h")
    home = await _home(homes, ann.id)
    await homes.add_member(home, ben.id, "viewer", NOW)
    with pytest.raises(Conflict):
        await homes.add_member(home, ben.id, "member", NOW)

    # The only owner can neither step down nor leave.
    with pytest.raises(LastOwner):
        await homes.change_member(home, ann.id, role="member")
    with pytest.raises(LastOwner):
        await homes.remove_member(home, ann.id)

    # Making Ben owner transfers the household: Ann becomes a member.
    moved = await homes.change_member(home, ben.id, role="owner")
    assert moved is not None and moved.role == "owner"
    assert [(m.email, m.role) for m in await homes.members(home)] == [
        ("ben@example.com", "owner"),
        ("ann@example.com", "member"),
    ]
    # Ben's own household comes first for him; Ann's list still has her old one, as member.
    assert [role for _, role in await homes.memberships(ben.id)] == ["owner", "owner"]
    assert await homes.memberships(ann.id) == ((home, "member"),)
    ben_own = (await homes.memberships(ben.id))[0][0]
    own = await homes.own_of([ann.id, ben.id, "nobody"])
    assert {u: h.id for u, h in own.items()} == {ann.id: home, ben.id: ben_own}

    # A member may leave; someone who is not a member is not removed twice.
    assert await homes.remove_member(home, ann.id) is True
    assert await homes.remove_member(home, ann.id) is False
    assert await homes.change_member(home, ann.id, role="viewer") is None


async def test_notifications_change_alone(users: UserStore, homes: HouseholdStore) -> None:
    cat = await users.create("cat@example.com", "h")
    home = await _home(homes, cat.id)
    member = await homes.change_member(home, cat.id, notify_email=True)
    assert member is not None and (member.role, member.notify_email) == ("owner", True)


async def test_registering_accepts_live_invitations_only(
    users: UserStore, homes: HouseholdStore
) -> None:
    dora = await users.create("dora@example.com", "h")
    eve = await users.create("eve@example.com", "h")
    dora_home, eve_home = await _home(homes, dora.id), await _home(homes, eve.id)
    now = datetime.now(UTC)
    live = await homes.invite(dora_home, "Finn@Example.com", "viewer", dora.id, now)
    assert live.email == "finn@example.com"
    assert live.expires_at == now + timedelta(days=7)
    # Eve's invitation is eight days old: expired.
    await homes.invite(eve_home, "finn@example.com", "member", eve.id, now - timedelta(days=8))
    assert [i.id for i in await homes.invitations(dora_home, now)] == [live.id]
    assert await homes.invitations(eve_home, now) == []

    finn = await users.create("finn@example.com", "h")
    roles = dict(await homes.memberships(finn.id))
    assert roles.pop(dora_home) == "viewer"
    assert eve_home not in roles
    assert list(roles.values()) == ["owner"]  # and his own household
    accepted = await homes.invitation(live.id)
    assert accepted is not None and accepted.accepted_at is not None
    assert await homes.invitations(dora_home, now) == []
