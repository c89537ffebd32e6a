"""Alert rules: what users ask to be told about, and the look-ups evaluation makes of them."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import alert_rules
from energy_tracker.services.alerts.models import AlertRule

RULE_FIELDS = frozenset(
    {
        "name",
        "device_id",
        "metric",
        "period",
        "op",
        "threshold",
        "clear_threshold",
        "for_s",
        "cooldown_s",
        "severity",
        "channels",
    }
)


class RuleStore:
    """Alert rules; one short transaction per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, owner_id: str, household_id: str, now: datetime, **fields: Any
    ) -> AlertRule:
        """Store a validated rule of a household; Conflict if its owner, household or device
        no longer exists."""
        _check_fields(fields)
        rule = AlertRule(
            id=str(uuid.uuid4()),
            owner_id=owner_id,
            household_id=household_id,
            created_at=now,
            updated_at=now,
            **fields,
        )
        try:
            async with self._db.begin() as conn:
                await conn.execute(insert(alert_rules).values(**vars(rule)))
        except IntegrityError as exc:
            raise Conflict("the rule's owner or device does not exist") from exc
        return rule

    async def get(self, rule_id: str) -> AlertRule | None:
        """The rule with this id, if any."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(alert_rules).where(alert_rules.c.id == rule_id))
            ).first()
        return rule_from_row(row) if row else None

    async def by_ids(self, rule_ids: Collection[str]) -> dict[str, AlertRule]:
        """These rules, by id (those that exist)."""
        if not rule_ids:
            return {}
        query = select(alert_rules).where(alert_rules.c.id.in_(rule_ids))
        async with self._db.begin() as conn:
            return {row.id: rule_from_row(row) for row in (await conn.execute(query)).all()}

    async def list(
        self, household_ids: Collection[str] | None, limit: int = 100, offset: int = 0
    ) -> builtins.list[AlertRule]:
        """A page of these households' rules, or everyone's (None: admins), oldest first."""
        query = (
            select(alert_rules)
            .order_by(alert_rules.c.created_at, alert_rules.c.id)
            .limit(limit)
            .offset(offset)
        )
        if household_ids is not None:
            query = query.where(alert_rules.c.household_id.in_(list(household_ids)))
        async with self._db.begin() as conn:
            return [rule_from_row(row) for row in (await conn.execute(query)).all()]

    async def update(self, rule_id: str, now: datetime, **fields: Any) -> AlertRule | None:
        """Change a rule's validated fields; None if there is no such rule."""
        _check_fields(fields)
        async with self._db.begin() as conn:
            await conn.execute(
                update(alert_rules)
                .where(alert_rules.c.id == rule_id)
                .values(updated_at=now, **fields)
            )
            row = (
                await conn.execute(select(alert_rules).where(alert_rules.c.id == rule_id))
            ).first()
        return rule_from_row(row) if row else None

    async def delete(self, rule_id: str) -> bool:
        """Remove a rule with its state and alerts; False if there was none."""
        async with self._db.begin() as conn:
            result = await conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
        return result.rowcount == 1

    async def watching(
        self,
        device_ids: Collection[str],
        household_ids: Collection[str],
        metrics: Collection[str],
    ) -> builtins.list[AlertRule]:
        """Rules on `metrics` of one of these devices, or of all the devices of these
        households."""
        if not device_ids and not household_ids:
            return []
        query = select(alert_rules).where(
            alert_rules.c.metric.in_(metrics),
            or_(
                alert_rules.c.device_id.in_(list(device_ids)),
                and_(
                    alert_rules.c.device_id.is_(None),
                    alert_rules.c.household_id.in_(list(household_ids)),
                ),
            ),
        )
        async with self._db.begin() as conn:
            return [rule_from_row(row) for row in (await conn.execute(query)).all()]

    async def page(
        self, metrics: Collection[str], after_id: str, limit: int
    ) -> builtins.list[AlertRule]:
        """Rules on `metrics` with ids after `after_id`, in id order: for periodic sweeps."""
        query = (
            select(alert_rules)
            .where(alert_rules.c.metric.in_(metrics), alert_rules.c.id > after_id)
            .order_by(alert_rules.c.id)
            .limit(limit)
        )
        async with self._db.begin() as conn:
            return [rule_from_row(row) for row in (await conn.execute(query)).all()]


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = fields.keys() - RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule fields {sorted(unknown)}")


def rule_from_row(row: Row[Any]) -> AlertRule:
    """An AlertRule from a row holding every column of `alert_rules`."""
    return AlertRule(**{c.key: row._mapping[c.key] for c in alert_rules.c})
