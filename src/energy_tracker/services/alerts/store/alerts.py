"""Alerts as users see them: listed, looked up and acknowledged (evaluation writes them)."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Row, false, select, true, update

from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import alerts
from energy_tracker.services.alerts.lifecycle import ACKNOWLEDGED, Transition, transition
from energy_tracker.services.alerts.models import Alert, AlertRule, datetime_to_ms
from energy_tracker.services.alerts.store.transitions import insert_transitions


class AlertLog:
    """The alerts evaluation opened; one short transaction per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(
        self,
        household_ids: Collection[str] | None,
        *,
        state: str | None = None,
        acknowledged: bool | None = None,
        device_id: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Alert]:
        """A page of these households' alerts, newest first; None: everyone's (admins)."""
        query = select(alerts).order_by(alerts.c.started_at.desc(), alerts.c.id).limit(limit)
        query = query.offset(offset)
        for column, wanted in (
            (alerts.c.state, state),
            (alerts.c.device_id, device_id),
            (alerts.c.rule_id, rule_id),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if household_ids is not None:
            query = query.where(alerts.c.household_id.in_(list(household_ids)))
        if acknowledged is not None:
            query = query.where(alerts.c.acknowledged == (true() if acknowledged else false()))
        async with self._db.begin() as conn:
            return [alert_from_row(row) for row in (await conn.execute(query)).all()]

    async def get(self, alert_id: str) -> Alert | None:
        """The alert with this id, if any."""
        async with self._db.begin() as conn:
            row = (await conn.execute(select(alerts).where(alerts.c.id == alert_id))).first()
        return alert_from_row(row) if row else None

    async def acknowledge(
        self, alert: Alert, rule: AlertRule, now: datetime
    ) -> tuple[Alert, Transition | None]:
        """Mark an alert acknowledged, with its transition; acknowledging again changes nothing."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert.id, alerts.c.acknowledged == false())
                .values(acknowledged=True, acknowledged_at=now)
            )
            row = (await conn.execute(select(alerts).where(alerts.c.id == alert.id))).one()
            acked = alert_from_row(row)
            if result.rowcount != 1:
                return acked, None
            event = transition(acked, rule, ACKNOWLEDGED, acked.value, datetime_to_ms(now), now)
            await insert_transitions(conn, [event])
        return acked, event


def alert_from_row(row: Row[Any]) -> Alert:
    """An Alert from a row holding every column of `alerts`."""
    return Alert(**{c.key: row._mapping[c.key] for c in alerts.c})
