"""The notification outbox: deliveries evaluation wrote, claimed and attempted by the
dispatcher (notify.py), and shown with their attempts on each alert."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.schema import alert_deliveries, alert_delivery_attempts
from energy_tracker.services.alerts.models import Attempt, Delivery


class DeliveryOutbox:
    """Deliveries and their attempts; one short transaction per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def of_alerts(self, alert_ids: Collection[str]) -> dict[str, builtins.list[Delivery]]:
        """The notifications of each alert, in the order of their transitions."""
        if not alert_ids:
            return {}
        query = (
            select(alert_deliveries)
            .where(alert_deliveries.c.alert_id.in_(alert_ids))
            # Firing before resolved when one evaluation wrote both.
            .order_by(
                alert_deliveries.c.created_at, alert_deliveries.c.event, alert_deliveries.c.id
            )
        )
        out: dict[str, list[Delivery]] = {}
        async with self._db.begin() as conn:
            for row in (await conn.execute(query)).all():
                out.setdefault(row.alert_id, []).append(Delivery(**row._mapping))
        return out

    async def attempts_of(self, delivery_ids: Collection[str]) -> dict[str, builtins.list[Attempt]]:
        """Every recorded attempt of each delivery, in order."""
        if not delivery_ids:
            return {}
        query = (
            select(alert_delivery_attempts)
            .where(alert_delivery_attempts.c.delivery_id.in_(delivery_ids))
            .order_by(alert_delivery_attempts.c.attempt)
        )
        out: dict[str, list[Attempt]] = {}
        async with self._db.begin() as conn:
            for row in (await conn.execute(query)).all():
                fields = {k: v for k, v in row._mapping.items() if k != "id"}
                out.setdefault(row.delivery_id, []).append(Attempt(**fields))
        return out

    async def due(self, now: datetime, limit: int) -> builtins.list[Delivery]:
        """Pending deliveries whose next attempt is due, the longest-waiting first."""
        query = (
            select(alert_deliveries)
            .where(
                alert_deliveries.c.status == "pending", alert_deliveries.c.next_attempt_at <= now
            )
            .order_by(alert_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        async with self._db.begin() as conn:
            return [Delivery(**row._mapping) for row in (await conn.execute(query)).all()]

    async def next_attempt_at(self) -> datetime | None:
        """When the earliest pending delivery comes due (None when none is pending): the
        dispatcher sleeps until then."""
        query = select(func.min(alert_deliveries.c.next_attempt_at)).where(
            alert_deliveries.c.status == "pending"
        )
        async with self._db.begin() as conn:
            return await conn.scalar(query)

    async def claim(self, delivery: Delivery, lease_until: datetime) -> bool:
        """Take a due delivery for one attempt; False if another dispatcher took it first.

        The attempt counter is the claim token: only the dispatcher whose UPDATE still sees the
        count it read gets the row, and the lease pushes the next attempt out in case it dies.
        """
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(alert_deliveries)
                .where(
                    alert_deliveries.c.id == delivery.id,
                    alert_deliveries.c.status == "pending",
                    alert_deliveries.c.attempts == delivery.attempts,
                )
                .values(attempts=delivery.attempts + 1, next_attempt_at=lease_until)
            )
        return result.rowcount == 1

    async def record_attempt(
        self, attempt: Attempt, *, status: str, next_attempt_at: datetime | None
    ) -> None:
        """Keep an attempt and move its delivery on: delivered, failed, or pending until
        `next_attempt_at`."""
        values: dict[str, Any] = {"status": status, "last_error": attempt.error}
        if status == "delivered":
            values["delivered_at"] = attempt.at
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        async with self._db.begin() as conn:
            await conn.execute(
                insert(alert_delivery_attempts).values(id=str(uuid.uuid4()), **vars(attempt))
            )
            await conn.execute(
                update(alert_deliveries)
                .where(alert_deliveries.c.id == attempt.delivery_id)
                .values(**values)
            )
