"""Households, their members and invitations in the metadata database.

The rule that a household always keeps an owner is enforced here, inside the transaction
that would break it, so two concurrent demotions cannot both pass a check made before.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from energy_tracker.core.auth import normalize_email
from energy_tracker.core.directory import directory_changed
from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import (
    household_invitations,
    household_members,
    households,
    users,
)
from energy_tracker.services.users.models import Household, Invitation, Member, User

UPDATABLE = frozenset({"name", "timezone", "currency", "tariff", "country"})
INVITATION_TTL = timedelta(days=7)
NAME_MAX = 200


class LastOwner(Exception):
    """The change would leave the household without an owner."""


def household_name(name: str | None, email: str) -> str:
    """What a user's first household is called: after them, as a person would name it.
    (Revision 0003_households names the households it makes the same way.)"""
    who = name or email.split("@", 1)[0]
    return f"{who}'s home"[:NAME_MAX]


async def found_household(conn: AsyncConnection, user: User, now: datetime) -> None:
    """In the transaction that creates `user`: their own household, with them its owner, and
    every live invitation of their e-mail accepted."""
    household_id = str(uuid.uuid4())
    await conn.execute(
        households.insert().values(
            id=household_id,
            name=household_name(user.name, user.email),
            timezone="UTC",
            currency="EUR",
            tariff=None,
            country=None,
            created_at=now,
        )
    )
    await conn.execute(
        household_members.insert().values(
            household_id=household_id,
            user_id=user.id,
            role="owner",
            notify_email=False,
            joined_at=now,
        )
    )
    inv = household_invitations.c
    live = (
        await conn.execute(
            select(inv.id, inv.household_id, inv.role)
            .where(inv.email == user.email, inv.accepted_at.is_(None), inv.expires_at > now)
            .order_by(inv.created_at)
        )
    ).all()
    joined: set[str] = set()
    for row in live:
        if row.household_id in joined:  # invited twice: the first invitation's role counts
            continue
        joined.add(row.household_id)
        await conn.execute(
            household_members.insert().values(
                household_id=row.household_id,
                user_id=user.id,
                role=row.role,
                notify_email=False,
                joined_at=now,
            )
        )
    if live:
        await conn.execute(
            update(household_invitations)
            .where(inv.id.in_([row.id for row in live]))
            .values(accepted_at=now)
        )


class HouseholdStore:
    """Households, members and invitations; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, household_id: str) -> Household | None:
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(households).where(households.c.id == household_id))
            ).first()
        return Household(**row._mapping) if row else None

    async def of_user(self, user_id: str) -> builtins.list[tuple[Household, str]]:
        """(household, role) of each household the user belongs to, their own first."""
        query = (
            select(households, household_members.c.role)
            .join(household_members, household_members.c.household_id == households.c.id)
            .where(household_members.c.user_id == user_id)
            .order_by(*_own_first())
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [(_household(row), row.role) for row in rows]

    async def own_of(self, user_ids: Collection[str]) -> dict[str, Household]:
        """Each user's own household (the first of `of_user`), in one query."""
        if not user_ids:
            return {}
        m = household_members.c
        query = (
            select(households, m.user_id)
            .join(household_members, m.household_id == households.c.id)
            .where(m.user_id.in_(list(user_ids)))
            .order_by(m.user_id, *_own_first())
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        own: dict[str, Household] = {}
        for row in rows:
            own.setdefault(row.user_id, _household(row))
        return own

    async def memberships(self, user_id: str) -> tuple[tuple[str, str], ...]:
        """(household id, role) of each household the user belongs to, their own first."""
        m = household_members.c
        query = select(m.household_id, m.role).where(m.user_id == user_id).order_by(*_own_first())
        async with self._db.begin() as conn:
            return tuple((r.household_id, r.role) for r in (await conn.execute(query)).all())

    async def update(self, household_id: str, **fields: Any) -> Household | None:
        """Change settings (see UPDATABLE); None if there is no such household."""
        unknown = fields.keys() - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update household fields {sorted(unknown)}")
        async with self._db.begin() as conn:
            if fields:
                await conn.execute(
                    update(households).where(households.c.id == household_id).values(**fields)
                )
            row = (
                await conn.execute(select(households).where(households.c.id == household_id))
            ).first()
        directory_changed()
        return _household(row) if row else None

    async def members(self, household_id: str) -> builtins.list[Member]:
        """The members, owners first, then by when they joined."""
        query = _members().where(household_members.c.household_id == household_id)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query.order_by(*_own_first()))).all()
        return [Member(**row._mapping) for row in rows]

    async def member(self, household_id: str, user_id: str) -> Member | None:
        m = household_members.c
        query = _members().where(m.household_id == household_id, m.user_id == user_id)
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        return Member(**row._mapping) if row else None

    async def add_member(self, household_id: str, user_id: str, role: str, now: datetime) -> None:
        """Conflict when the user is a member already."""
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    household_members.insert().values(
                        household_id=household_id,
                        user_id=user_id,
                        role=role,
                        notify_email=False,
                        joined_at=now,
                    )
                )
        except IntegrityError as exc:
            raise Conflict("already a member") from exc

    async def invite(
        self, household_id: str, email: str, role: str, invited_by: str, now: datetime
    ) -> Invitation:
        """A pending invitation of an e-mail without an account, live for INVITATION_TTL."""
        invitation = Invitation(
            id=str(uuid.uuid4()),
            household_id=household_id,
            email=normalize_email(email),
            role=role,
            invited_by=invited_by,
            created_at=now,
            expires_at=now + INVITATION_TTL,
            accepted_at=None,
        )
        async with self._db.begin() as conn:
            await conn.execute(household_invitations.insert().values(**vars(invitation)))
        return invitation

    async def invitations(self, household_id: str, now: datetime) -> builtins.list[Invitation]:
        """The household's invitations not accepted yet and not expired, oldest first."""
        inv = household_invitations.c
        query = (
            select(household_invitations)
            .where(inv.household_id == household_id, inv.accepted_at.is_(None))
            .where(inv.expires_at > now)
            .order_by(inv.created_at, inv.id)
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [Invitation(**row._mapping) for row in rows]

    async def invitation(self, invitation_id: str) -> Invitation | None:
        query = select(household_invitations).where(household_invitations.c.id == invitation_id)
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        return Invitation(**row._mapping) if row else None

    async def accept(self, invitation: Invitation, user_id: str, now: datetime) -> None:
        """Join the household the invitation names; Conflict when a member already."""
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    update(household_invitations)
                    .where(household_invitations.c.id == invitation.id)
                    .values(accepted_at=now)
                )
                await conn.execute(
                    household_members.insert().values(
                        household_id=invitation.household_id,
                        user_id=user_id,
                        role=invitation.role,
                        notify_email=False,
                        joined_at=now,
                    )
                )
        except IntegrityError as exc:
            raise Conflict("already a member") from exc

    async def change_member(
        self,
        household_id: str,
        user_id: str,
        role: str | None = None,
        notify_email: bool | None = None,
    ) -> Member | None:
        """Change a member's role or e-mail notifications; None when not a member.

        Making someone `owner` transfers the household: every other owner becomes a member.
        LastOwner when the change would leave no owner."""
        m = household_members.c
        where = and_(m.household_id == household_id, m.user_id == user_id)
        async with self._db.begin() as conn:
            current = await conn.scalar(select(m.role).where(where).with_for_update())
            if current is None:
                return None
            if role == "owner":
                await conn.execute(
                    update(household_members)
                    .where(m.household_id == household_id, m.role == "owner", m.user_id != user_id)
                    .values(role="member")
                )
            elif role is not None and current == "owner":
                await _keep_an_owner(conn, household_id, user_id)
            values: dict[str, Any] = {}
            if role is not None:
                values["role"] = role
            if notify_email is not None:
                values["notify_email"] = notify_email
            if values:
                await conn.execute(update(household_members).where(where).values(**values))
        return await self.member(household_id, user_id)

    async def remove_member(self, household_id: str, user_id: str) -> bool:
        """Remove a member (or let them leave); False when not a member; LastOwner when they
        are its only owner."""
        m = household_members.c
        where = and_(m.household_id == household_id, m.user_id == user_id)
        async with self._db.begin() as conn:
            current = await conn.scalar(select(m.role).where(where).with_for_update())
            if current is None:
                return False
            if current == "owner":
                await _keep_an_owner(conn, household_id, user_id)
            await conn.execute(delete(household_members).where(where))
        return True


async def _keep_an_owner(conn: AsyncConnection, household_id: str, leaving: str) -> None:
    """LastOwner unless the household has an owner besides `leaving`. The owners' rows are
    locked, so two owners demoting each other at once cannot both succeed."""
    m = household_members.c
    others = (
        await conn.execute(
            select(m.user_id)
            .where(m.household_id == household_id, m.role == "owner", m.user_id != leaving)
            .with_for_update()
        )
    ).all()
    if not others:
        raise LastOwner(household_id)


def _own_first() -> tuple[Any, ...]:
    """Owned households first, then by when they were joined: the first is one's own."""
    m = household_members.c
    return ((m.role != "owner"), m.joined_at, m.household_id)


def _members() -> Any:
    m = household_members.c
    return select(
        m.household_id,
        m.user_id,
        users.c.email,
        users.c.name,
        m.role,
        m.notify_email,
        m.joined_at,
    ).join(users, users.c.id == m.user_id)


def _household(row: Row[Any]) -> Household:
    return Household(**{c.key: row._mapping[c.key] for c in households.c})
