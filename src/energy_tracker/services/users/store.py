"""Accounts, refresh tokens and personal access tokens in the metadata database."""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, false, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError

from energy_tracker.core.auth import AccessGrant, normalize_email
from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import access_tokens, refresh_tokens, users
from energy_tracker.services.users.household_store import found_household
from energy_tracker.services.users.models import AccessToken, User

UPDATABLE = frozenset({"name", "role", "disabled", "password_hash"})


MAX_ACCESS_TOKENS = 50
"""Live personal access tokens per user: enough for every script of a home, not a flood."""


class TooManyTokens(Exception):
    """The user already holds MAX_ACCESS_TOKENS live personal access tokens."""


class UserStore:
    """Users, their refresh tokens and their personal access tokens; every method is one short
    transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, email: str, password_hash: str, name: str | None = None, role: str = "user"
    ) -> User:
        """Add an account, with its own household and the households its e-mail was invited
        to; Conflict when the email (in any case) is already registered."""
        user = User(
            id=str(uuid.uuid4()),
            email=normalize_email(email),
            password_hash=password_hash,
            name=name,
            role=role,
            disabled=False,
            created_at=datetime.now(UTC),
        )
        try:
            async with self._db.begin() as conn:
                await conn.execute(users.insert().values(**vars(user)))
                await found_household(conn, user, user.created_at)
        except IntegrityError as exc:
            raise Conflict(f"email {user.email} is already registered") from exc
        return user

    async def get(self, user_id: str) -> User | None:
        """The user with this id, if any."""
        async with self._db.begin() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        """The user with this email, compared case-insensitively."""
        query = select(users).where(users.c.email == normalize_email(email))
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        return _user(row) if row else None

    async def update(self, user_id: str, **fields: Any) -> User | None:
        """Change profile fields (see UPDATABLE) and return the result; None if no such user."""
        unknown = fields.keys() - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update user fields {sorted(unknown)}")
        async with self._db.begin() as conn:
            if fields:
                await conn.execute(update(users).where(users.c.id == user_id).values(**fields))
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def list(self, limit: int = 100, offset: int = 0) -> builtins.list[User]:
        """A page of users, oldest first (a stable order, so pages neither skip nor repeat)."""
        query = select(users).order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_user(row) for row in rows]

    async def add_refresh_token(self, user_id: str, token_hash: str, expires_at: datetime) -> None:
        """Remember a refresh token by its hash; Conflict if the hash exists or the user doesn't."""
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    refresh_tokens.insert().values(
                        id=str(uuid.uuid4()),
                        user_id=user_id,
                        token_hash=token_hash,
                        expires_at=expires_at,
                        revoked=False,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError as exc:
            raise Conflict("refresh token already stored, or its user does not exist") from exc

    async def use_refresh_token(self, token_hash: str, now: datetime) -> str | None:
        """Spend a refresh token: its user id if it was live, else None; it never works twice.

        The conditional UPDATE is the check: of two concurrent uses, the database lets only one
        flip `revoked`, and only that one sees a row count of 1. A token used again after it was
        spent was copied: whoever holds its successor (the thief or the owner) cannot be told
        apart, so every refresh token of the account is revoked and each session signs in anew.
        """
        spend = (
            update(refresh_tokens)
            .where(
                refresh_tokens.c.token_hash == token_hash,
                refresh_tokens.c.revoked == false(),
                refresh_tokens.c.expires_at > now,
            )
            .values(revoked=True)
        )
        owner = select(refresh_tokens.c.user_id).where(refresh_tokens.c.token_hash == token_hash)
        async with self._db.begin() as conn:
            if (await conn.execute(spend)).rowcount == 1:
                return await conn.scalar(owner)
            reused = await conn.scalar(owner.where(refresh_tokens.c.revoked == true()))
        if reused is not None:
            await self.revoke_user_tokens(reused)
        return None

    async def revoke_refresh_token(self, token_hash: str) -> None:
        """Make one refresh token unusable (logout); unknown hashes are ignored."""
        async with self._db.begin() as conn:
            await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.token_hash == token_hash)
                .values(revoked=True)
            )

    async def revoke_user_tokens(self, user_id: str) -> None:
        """Make every refresh token of a user unusable (password change, account disabled)."""
        async with self._db.begin() as conn:
            await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked == false())
                .values(revoked=True)
            )

    async def add_access_token(
        self, token: AccessToken, token_hash: str, now: datetime
    ) -> AccessToken:
        """Store a new personal access token by its hash; TooManyTokens when the user already
        holds MAX_ACCESS_TOKENS live ones, Conflict when the user is gone."""
        try:
            async with self._db.begin() as conn:
                held = await conn.scalar(
                    select(func.count()).select_from(access_tokens).where(_live(token.user_id, now))
                )
                if (held or 0) >= MAX_ACCESS_TOKENS:
                    raise TooManyTokens
                row = {**vars(token), "token_hash": token_hash}
                await conn.execute(access_tokens.insert().values(**row))
        except IntegrityError as exc:
            raise Conflict("token hash already stored, or its user does not exist") from exc
        return token

    async def access_tokens(self, user_id: str) -> builtins.list[AccessToken]:
        """The user's tokens not revoked, newest first: expired ones too, so that the owner
        sees why a script stopped working."""
        query = (
            select(*_TOKEN_COLUMNS)
            .where(access_tokens.c.user_id == user_id, access_tokens.c.revoked_at.is_(None))
            .order_by(access_tokens.c.created_at.desc(), access_tokens.c.id)
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [AccessToken(**row._mapping) for row in rows]

    async def access_grant(self, token_id: str) -> AccessGrant | None:
        """What authentication needs to know of a token, revoked and expired ones included."""
        query = select(
            access_tokens.c.user_id,
            access_tokens.c.token_hash,
            access_tokens.c.scope,
            access_tokens.c.expires_at,
            access_tokens.c.revoked_at,
        ).where(access_tokens.c.id == token_id)
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        revoked = row.revoked_at is not None
        return AccessGrant(
            token_id, row.user_id, row.token_hash, row.scope, row.expires_at, revoked
        )

    async def revoke_access_token(self, user_id: str, token_id: str, now: datetime) -> bool:
        """Revoke one of the user's tokens; False when it is not theirs or already revoked."""
        async with self._db.begin() as conn:
            done = await conn.execute(
                update(access_tokens)
                .where(
                    access_tokens.c.id == token_id,
                    access_tokens.c.user_id == user_id,
                    access_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        return bool(done.rowcount == 1)

    async def access_token_used(self, token_id: str, at: datetime, resolution: timedelta) -> None:
        """Record a use of the token, unless one within `resolution` before `at` was recorded
        (by this or another process): a use costs a write at most once per resolution."""
        async with self._db.begin() as conn:
            await conn.execute(
                update(access_tokens)
                .where(
                    access_tokens.c.id == token_id,
                    or_(
                        access_tokens.c.last_used_at.is_(None),
                        access_tokens.c.last_used_at <= at - resolution,
                    ),
                )
                .values(last_used_at=at)
            )


_TOKEN_COLUMNS = [c for c in access_tokens.c if c.name != "token_hash"]


def _live(user_id: str, now: datetime) -> Any:
    """The condition of a user's token that still works: not revoked, not expired."""
    return (
        (access_tokens.c.user_id == user_id)
        & access_tokens.c.revoked_at.is_(None)
        & or_(access_tokens.c.expires_at.is_(None), access_tokens.c.expires_at > now)
    )


def _user(row: Row[Any]) -> User:
    return User(**row._mapping)
