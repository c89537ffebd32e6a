"""The alert-events outbox: transitions recorded with their evaluation, published after the
commit and marked; the SSE stream reads them too."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import alert_transitions
from energy_tracker.services.alerts.lifecycle import Transition


class TransitionOutbox:
    """Recorded transitions, until they are on `alert-events`; one short transaction per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def since(
        self,
        household_ids: Collection[str] | None,
        since: datetime,
        limit: int,
        after_id: str | None = None,
    ) -> builtins.list[tuple[str, datetime, dict[str, Any]]]:
        """(id, recorded_at, payload) of transitions recorded at or after `since`, in order of
        (recorded_at, id); with `after_id`, only those after (since, after_id), so that a
        caller pages on even when more than `limit` share one instant."""
        at, tid = alert_transitions.c.recorded_at, alert_transitions.c.id
        later = (
            at >= since if after_id is None else or_(at > since, and_(at == since, tid > after_id))
        )
        query = (
            select(tid, at, alert_transitions.c.payload).where(later).order_by(at, tid).limit(limit)
        )
        if household_ids is not None:
            query = query.where(alert_transitions.c.household_id.in_(list(household_ids)))
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.id, row.recorded_at, row.payload) for row in rows]

    async def recorded_at(
        self, transition_id: str, household_ids: Collection[str] | None
    ) -> datetime | None:
        """When a transition (of these households; None: any) was recorded, if it exists."""
        query = select(alert_transitions.c.recorded_at).where(
            alert_transitions.c.id == transition_id
        )
        if household_ids is not None:
            query = query.where(alert_transitions.c.household_id.in_(list(household_ids)))
        async with self._db.begin() as conn:
            return await conn.scalar(query)

    async def unpublished(
        self, recorded_before: datetime, limit: int
    ) -> builtins.list[tuple[str, str, dict[str, Any]]]:
        """(id, owner_id, payload) of transitions not yet on the topic, oldest first."""
        query = (
            select(
                alert_transitions.c.id, alert_transitions.c.owner_id, alert_transitions.c.payload
            )
            .where(
                alert_transitions.c.published == false(),
                alert_transitions.c.recorded_at < recorded_before,
            )
            .order_by(alert_transitions.c.recorded_at)
            .limit(limit)
        )
        async with self._db.begin() as conn:
            return [(r.id, r.owner_id, r.payload) for r in (await conn.execute(query)).all()]

    async def mark_published(self, transition_ids: Collection[str]) -> None:
        """Note that these transitions are on the topic."""
        if not transition_ids:
            return
        async with self._db.begin() as conn:
            await conn.execute(
                update(alert_transitions)
                .where(alert_transitions.c.id.in_(transition_ids))
                .values(published=True)
            )


async def insert_transitions(conn: AsyncConnection, events: Sequence[Transition]) -> None:
    """Record transitions, unpublished, inside the caller's transaction."""
    if events:
        await conn.execute(
            insert(alert_transitions),
            [
                {
                    "id": e.id,
                    "alert_id": e.alert_id,
                    "owner_id": e.owner_id,
                    "household_id": e.household_id,
                    "state": e.state,
                    "payload": e.payload,
                    "recorded_at": e.recorded_at,
                    "published": False,
                }
                for e in events
            ],
        )
