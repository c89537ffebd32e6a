"""Alert rules, evaluation state, alerts, transitions and deliveries in the metadata database.

The evaluation of one batch is one transaction (`AlertStore.evaluation()`): the observations it
consumed, the new state, the alerts, their transitions and notifications commit together or not
at all. Each state row carries a version and is only ever written on the version that was read,
so of two replicas acting on one (rule, scope) one wins and the other retries its batch.
"""

from __future__ import annotations

import builtins
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    Row,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import (
    alert_deliveries,
    alert_delivery_attempts,
    alert_device_seen,
    alert_rules,
    alert_states,
    alert_transitions,
    alert_usage,
    alerts,
    devices,
)
from energy_tracker.services.alerts.lifecycle import (
    ACKNOWLEDGED,
    Outcome,
    Transition,
    transition,
)
from energy_tracker.services.alerts.models import (
    Alert,
    AlertRule,
    Attempt,
    Delivery,
    datetime_to_ms,
)
from energy_tracker.services.alerts.rules import EvalState

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
# The columns an evaluation moves; `acknowledged` belongs to the user and is never among them.
_EVALUATED_ALERT_COLUMNS = ("state", "value", "peak_value", "last_seen_at", "resolved_at")


@dataclass(frozen=True)
class StoredState:
    """An evaluation state as read, with the version a write must match."""

    state: EvalState
    version: int
    period_end: int | None  # energy and cost: when the period of the last value ends


@dataclass(frozen=True)
class Seen:
    """The newest reading the alerts consumer has of a device, and its newest power."""

    last_ts: int
    power_w: float | None = None
    power_ts: int | None = None


@dataclass(frozen=True)
class UsageValue:
    """One usage bucket as `usage-events` last described it."""

    device_id: str
    granularity: str
    period_start: int
    version: int
    energy_kwh: float
    cost: float


class AlertStore:
    """Everything the alerts service keeps; one short transaction per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- rules ---------------------------------------------------------------------------------

    async def create_rule(self, owner_id: str, now: datetime, **fields: Any) -> AlertRule:
        """Store a validated rule; Conflict if its owner or device no longer exists."""
        _check_fields(fields)
        rule = AlertRule(
            id=str(uuid.uuid4()), owner_id=owner_id, created_at=now, updated_at=now, **fields
        )
        try:
            async with self._db.begin() as conn:
                await conn.execute(insert(alert_rules).values(**vars(rule)))
        except IntegrityError as exc:
            raise Conflict("the rule's owner or device does not exist") from exc
        return rule

    async def get_rule(self, rule_id: str) -> AlertRule | None:
        """The rule with this id, if any."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(alert_rules).where(alert_rules.c.id == rule_id))
            ).first()
        return _rule(row) if row else None

    async def rules_by_ids(self, rule_ids: Collection[str]) -> dict[str, AlertRule]:
        """These rules, by id (those that exist)."""
        if not rule_ids:
            return {}
        query = select(alert_rules).where(alert_rules.c.id.in_(rule_ids))
        async with self._db.begin() as conn:
            return {row.id: _rule(row) for row in (await conn.execute(query)).all()}

    async def list_rules(
        self, owner_id: str | None, limit: int = 100, offset: int = 0
    ) -> builtins.list[AlertRule]:
        """A page of one owner's rules, or everyone's (owner_id None: admins), oldest first."""
        query = (
            select(alert_rules)
            .order_by(alert_rules.c.created_at, alert_rules.c.id)
            .limit(limit)
            .offset(offset)
        )
        if owner_id is not None:
            query = query.where(alert_rules.c.owner_id == owner_id)
        async with self._db.begin() as conn:
            return [_rule(row) for row in (await conn.execute(query)).all()]

    async def update_rule(self, rule_id: str, now: datetime, **fields: Any) -> AlertRule | None:
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
        return _rule(row) if row else None

    async def delete_rule(self, rule_id: str) -> bool:
        """Remove a rule with its state and alerts; False if there was none."""
        async with self._db.begin() as conn:
            result = await conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
        return result.rowcount == 1

    async def rules_watching(
        self, device_ids: Collection[str], owner_ids: Collection[str], metrics: Collection[str]
    ) -> builtins.list[AlertRule]:
        """Rules on `metrics` of one of these devices, or of all the devices of these owners."""
        if not device_ids and not owner_ids:
            return []
        query = select(alert_rules).where(
            alert_rules.c.metric.in_(metrics),
            or_(
                alert_rules.c.device_id.in_(list(device_ids)),
                and_(
                    alert_rules.c.device_id.is_(None), alert_rules.c.owner_id.in_(list(owner_ids))
                ),
            ),
        )
        async with self._db.begin() as conn:
            return [_rule(row) for row in (await conn.execute(query)).all()]

    async def rules_page(
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
            return [_rule(row) for row in (await conn.execute(query)).all()]

    async def owner_devices(
        self, owner_ids: Collection[str]
    ) -> dict[str, builtins.list[tuple[str, datetime]]]:
        """The enabled devices (id, created_at) of each owner."""
        if not owner_ids:
            return {}
        query = select(devices.c.owner_id, devices.c.id, devices.c.created_at).where(
            devices.c.owner_id.in_(owner_ids), devices.c.disabled == false()
        )
        out: dict[str, list[tuple[str, datetime]]] = {}
        async with self._db.begin() as conn:
            for row in (await conn.execute(query)).all():
                out.setdefault(row.owner_id, []).append((row.id, row.created_at))
        return out

    async def states_past_period(
        self, now_ms: int, limit: int
    ) -> builtins.list[tuple[AlertRule, str, int]]:
        """(rule, scope, period end) of energy and cost states whose period is over while an
        alert is open or a `for` wait runs: the new period starts from zero."""
        query = (
            select(alert_rules, alert_states.c.scope, alert_states.c.period_end)
            .join(alert_states, alert_states.c.rule_id == alert_rules.c.id)
            .where(
                alert_states.c.period_end <= now_ms,
                or_(
                    alert_states.c.firing_since.is_not(None),
                    alert_states.c.pending_since.is_not(None),
                ),
            )
            .limit(limit)
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [(_rule(row), row.scope, row.period_end) for row in rows]

    async def prune_usage(self, before_ms: int) -> int:
        """Forget usage buckets that started before `before_ms` (no rule looks that far back)."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                delete(alert_usage).where(alert_usage.c.period_start < before_ms)
            )
        return result.rowcount

    # -- evaluation ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def evaluation(self) -> AsyncIterator[Evaluation]:
        """One evaluation as one transaction; Conflict when another writer got there first."""
        try:
            async with self._db.begin() as conn:
                yield Evaluation(conn)
        except IntegrityError as exc:
            raise Conflict("an evaluation state or alert was written concurrently") from exc

    # -- alerts --------------------------------------------------------------------------------

    async def list_alerts(
        self,
        owner_id: str | None,
        *,
        state: str | None = None,
        acknowledged: bool | None = None,
        device_id: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Alert]:
        """A page of alerts, newest first; owner_id None: everyone's (admins)."""
        query = select(alerts).order_by(alerts.c.started_at.desc(), alerts.c.id).limit(limit)
        query = query.offset(offset)
        for column, wanted in (
            (alerts.c.owner_id, owner_id),
            (alerts.c.state, state),
            (alerts.c.device_id, device_id),
            (alerts.c.rule_id, rule_id),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if acknowledged is not None:
            query = query.where(alerts.c.acknowledged == (true() if acknowledged else false()))
        async with self._db.begin() as conn:
            return [_alert(row) for row in (await conn.execute(query)).all()]

    async def get_alert(self, alert_id: str) -> Alert | None:
        """The alert with this id, if any."""
        async with self._db.begin() as conn:
            row = (await conn.execute(select(alerts).where(alerts.c.id == alert_id))).first()
        return _alert(row) if row else None

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
            acked = _alert(row)
            if result.rowcount != 1:
                return acked, None
            event = transition(acked, rule, ACKNOWLEDGED, acked.value, datetime_to_ms(now), now)
            await _insert_transitions(conn, [event])
        return acked, event

    async def deliveries_of(self, alert_ids: Collection[str]) -> dict[str, builtins.list[Delivery]]:
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

    # -- transitions (the alert-events outbox) --------------------------------------------------

    async def transitions_since(
        self, owner_id: str | None, since: datetime, limit: int, after_id: str | None = None
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
        if owner_id is not None:
            query = query.where(alert_transitions.c.owner_id == owner_id)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.id, row.recorded_at, row.payload) for row in rows]

    async def transition_recorded_at(
        self, transition_id: str, owner_id: str | None
    ) -> datetime | None:
        """When a transition (visible to owner_id; None: any) was recorded, if it exists."""
        query = select(alert_transitions.c.recorded_at).where(
            alert_transitions.c.id == transition_id
        )
        if owner_id is not None:
            query = query.where(alert_transitions.c.owner_id == owner_id)
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

    # -- deliveries (the notification outbox) ---------------------------------------------------

    async def due_deliveries(self, now: datetime, limit: int) -> builtins.list[Delivery]:
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


class Evaluation:
    """The reads and writes of one evaluation, on one connection inside one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def states(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], StoredState]:
        """The stored state of each (rule id, scope) that has one."""
        if not keys:
            return {}
        query = select(alert_states).where(
            tuple_(alert_states.c.rule_id, alert_states.c.scope).in_(list(keys))
        )
        return {
            (row.rule_id, row.scope): StoredState(
                EvalState(
                    last_at=row.last_at,
                    pending_since=row.pending_since,
                    firing_since=row.firing_since,
                    peak=row.peak,
                    cooldown_until=row.cooldown_until,
                ),
                row.version,
                row.period_end,
            )
            for row in (await self.conn.execute(query)).all()
        }

    async def alerts(self, alert_ids: Collection[str]) -> dict[str, Alert]:
        """These alerts, by id (those that exist)."""
        if not alert_ids:
            return {}
        query = select(alerts).where(alerts.c.id.in_(alert_ids))
        return {row.id: _alert(row) for row in (await self.conn.execute(query)).all()}

    async def seen(self, device_ids: Collection[str]) -> dict[str, Seen]:
        """What was last heard from each of these devices (those heard from at all)."""
        if not device_ids:
            return {}
        query = select(alert_device_seen).where(alert_device_seen.c.device_id.in_(device_ids))
        return {
            row.device_id: Seen(row.last_ts, row.power_w, row.power_ts)
            for row in (await self.conn.execute(query)).all()
        }

    async def owners_seen(self, owner_ids: Collection[str]) -> dict[str, dict[str, Seen]]:
        """What was last heard from every device of each owner."""
        if not owner_ids:
            return {}
        query = (
            select(devices.c.owner_id, alert_device_seen)
            .join(alert_device_seen, alert_device_seen.c.device_id == devices.c.id)
            .where(devices.c.owner_id.in_(owner_ids))
        )
        out: dict[str, dict[str, Seen]] = {}
        for row in (await self.conn.execute(query)).all():
            out.setdefault(row.owner_id, {})[row.device_id] = Seen(
                row.last_ts, row.power_w, row.power_ts
            )
        return out

    async def put_seen(self, heard: dict[str, Seen], known: Collection[str]) -> None:
        """Merge newly heard readings in; `known` are the devices that already have a row.

        The newer value wins inside the UPDATE itself, so a late batch never moves time back.
        """
        new = [{"device_id": d, **vars(s)} for d, s in heard.items() if d not in known]
        if new:
            await self.conn.execute(insert(alert_device_seen), new)
        old = [
            {"d": d, "ts": s.last_ts, "pw": s.power_w, "pts": s.power_ts}
            for d, s in heard.items()
            if d in known
        ]
        if old:
            c = alert_device_seen.c
            # Typed, as PostgreSQL cannot infer the type of a parameter tested for NULL.
            ts, pw, pts = (
                bindparam("ts", type_=BigInteger),
                bindparam("pw", type_=Double),
                bindparam("pts", type_=BigInteger),
            )
            newer_power = and_(pts.is_not(None), or_(c.power_ts.is_(None), c.power_ts < pts))
            await self.conn.execute(
                update(alert_device_seen)
                .where(c.device_id == bindparam("d"))
                .values(
                    last_ts=case((c.last_ts < ts, ts), else_=c.last_ts),
                    power_w=case((newer_power, pw), else_=c.power_w),
                    power_ts=case((newer_power, pts), else_=c.power_ts),
                ),
                old,
            )

    async def newer_usage(self, values: Iterable[UsageValue]) -> list[UsageValue]:
        """Store the buckets that are newer than what is stored (or new) and return them; a
        redelivered or outdated version is dropped here."""
        best: dict[tuple[str, str, int], UsageValue] = {}
        for v in values:
            key = (v.device_id, v.granularity, v.period_start)
            if key not in best or best[key].version < v.version:
                best[key] = v
        if not best:
            return []
        c = alert_usage.c
        query = select(c.device_id, c.granularity, c.period_start, c.version).where(
            tuple_(c.device_id, c.granularity, c.period_start).in_(list(best))
        )
        stored = {
            (row.device_id, row.granularity, row.period_start): row.version
            for row in (await self.conn.execute(query)).all()
        }
        fresh = {k: v for k, v in best.items() if stored.get(k, 0) < v.version}
        inserts = [vars(v) for k, v in fresh.items() if k not in stored]
        updates = [
            {
                "d": v.device_id,
                "g": v.granularity,
                "p": v.period_start,
                "v": v.version,
                "e": v.energy_kwh,
                "co": v.cost,
            }
            for k, v in fresh.items()
            if k in stored
        ]
        if inserts:
            await self.conn.execute(insert(alert_usage), inserts)
        if updates:
            await self.conn.execute(
                update(alert_usage)
                .where(
                    c.device_id == bindparam("d"),
                    c.granularity == bindparam("g"),
                    c.period_start == bindparam("p"),
                    c.version < bindparam("v"),
                )
                .values(version=bindparam("v"), energy_kwh=bindparam("e"), cost=bindparam("co")),
                updates,
            )
        return list(fresh.values())

    async def usage_sum(
        self, owner_id: str, granularity: str, period_start: int
    ) -> tuple[float, float]:
        """(kWh, cost) of one period summed over the owner's devices."""
        c = alert_usage.c
        query = (
            select(func.coalesce(func.sum(c.energy_kwh), 0.0), func.coalesce(func.sum(c.cost), 0.0))
            .select_from(alert_usage)
            .join(devices, devices.c.id == c.device_id)
            .where(
                devices.c.owner_id == owner_id,
                c.granularity == granularity,
                c.period_start == period_start,
            )
        )
        energy, cost = (await self.conn.execute(query)).one()
        return float(energy), float(cost)

    async def save(
        self,
        rule_id: str,
        scope: str,
        before: StoredState | None,
        outcome: Outcome,
        period_end: int | None,
    ) -> None:
        """Write an evaluation's new state and rows; Conflict if the state moved meanwhile."""
        s = outcome.state
        values = {
            "last_at": s.last_at,
            "pending_since": s.pending_since,
            "firing_since": s.firing_since,
            "peak": s.peak,
            "cooldown_until": s.cooldown_until,
            "period_end": period_end,
        }
        if before is None:
            await self.conn.execute(
                insert(alert_states).values(rule_id=rule_id, scope=scope, version=1, **values)
            )
        else:
            result = await self.conn.execute(
                update(alert_states)
                .where(
                    alert_states.c.rule_id == rule_id,
                    alert_states.c.scope == scope,
                    alert_states.c.version == before.version,
                )
                .values(version=before.version + 1, **values)
            )
            if result.rowcount != 1:
                raise Conflict(f"evaluation state of rule {rule_id} / {scope} moved meanwhile")
        created = [vars(a) for i, a in outcome.alerts.items() if i in outcome.created]
        if created:
            await self.conn.execute(insert(alerts), created)
        for alert_id, alert in outcome.alerts.items():
            if alert_id not in outcome.created:
                await self.conn.execute(
                    update(alerts)
                    .where(alerts.c.id == alert_id)
                    .values({k: getattr(alert, k) for k in _EVALUATED_ALERT_COLUMNS})
                )
        await _insert_transitions(self.conn, outcome.transitions)
        if outcome.deliveries:
            await self.conn.execute(insert(alert_deliveries), [vars(d) for d in outcome.deliveries])


async def _insert_transitions(conn: AsyncConnection, events: Sequence[Transition]) -> None:
    if events:
        await conn.execute(
            insert(alert_transitions),
            [
                {
                    "id": e.id,
                    "alert_id": e.alert_id,
                    "owner_id": e.owner_id,
                    "state": e.state,
                    "payload": e.payload,
                    "recorded_at": e.recorded_at,
                    "published": False,
                }
                for e in events
            ],
        )


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = fields.keys() - RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule fields {sorted(unknown)}")


def _rule(row: Row[Any]) -> AlertRule:
    return AlertRule(**{c.key: row._mapping[c.key] for c in alert_rules.c})


def _alert(row: Row[Any]) -> Alert:
    return Alert(**{c.key: row._mapping[c.key] for c in alerts.c})
