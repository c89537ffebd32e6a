"""The credential change counter (one row of `credential_changes`), which keeps every process's
credential cache (`core/credentials.py`) right when a change is made in another process."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import credential_changes

_ROW = credential_changes.c.id == 1


class CredentialChanges:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def version(self) -> int:
        """The counter now (0 before the first change)."""
        async with self._db.begin() as conn:
            found = await conn.scalar(select(credential_changes.c.version).where(_ROW))
        return int(found or 0)

    async def bump(self) -> int:
        """Move the counter by one; its new value. Concurrent bumps queue on the row's lock,
        so each gets a value of its own."""
        async with self._db.begin() as conn:
            moved = await conn.execute(
                update(credential_changes)
                .where(_ROW)
                .values(version=credential_changes.c.version + 1)
            )
            if moved.rowcount == 0:  # a database made before the row (0006) was
                await conn.execute(insert(credential_changes).values(id=1, version=1))
                return 1
            return int(await conn.scalar(select(credential_changes.c.version).where(_ROW)) or 0)
