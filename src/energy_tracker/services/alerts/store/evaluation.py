"""The evaluation unit of work: one batch's observations, states, alerts, transitions and
notifications commit together or not at all (`EvaluationStore.begin()`).

Each state row carries a version and is only ever written on the version that was read, so of
two replicas acting on one (rule, scope) one wins and the other retries its batch.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Double,
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

from energy_tracker.core.consumption import Layout, Placement, Role
from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import (
    alert_deliveries,
    alert_device_seen,
    alert_rules,
    alert_states,
    alert_usage,
    alerts,
    device_has_active_owner,
    devices,
    household_members,
    users,
)
from energy_tracker.services.alerts.lifecycle import Outcome
from energy_tracker.services.alerts.models import Alert, AlertRule, Seen, UsageValue
from energy_tracker.services.alerts.rules import EvalState
from energy_tracker.services.alerts.store.alerts import alert_from_row
from energy_tracker.services.alerts.store.rules import rule_from_row
from energy_tracker.services.alerts.store.transitions import insert_transitions

# The columns an evaluation moves; `acknowledged` belongs to the user and is never among them.
_EVALUATED_ALERT_COLUMNS = ("state", "value", "peak_value", "last_seen_at", "resolved_at")


@dataclass(frozen=True)
class StoredState:
    """An evaluation state as read, with the version a write must match."""

    state: EvalState
    version: int
    period_end: int | None  # energy and cost: when the period of the last value ends


class EvaluationStore:
    """Where evaluations begin, and what the periodic check reads and prunes around them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Evaluation]:
        """One evaluation as one transaction; Conflict when another writer got there first."""
        try:
            async with self._db.begin() as conn:
                yield Evaluation(conn)
        except IntegrityError as exc:
            raise Conflict("an evaluation state or alert was written concurrently") from exc

    async def household_devices(
        self, household_ids: Collection[str]
    ) -> dict[str, builtins.list[tuple[str, datetime]]]:
        """The enabled devices (id, created_at) of each household: not disabled, in a
        household with an enabled owner, as everywhere else (a stopped device is not silent)."""
        if not household_ids:
            return {}
        query = select(devices.c.household_id, devices.c.id, devices.c.created_at).where(
            devices.c.household_id.in_(list(household_ids)),
            devices.c.disabled == false(),
            device_has_active_owner(),
        )
        out: dict[str, list[tuple[str, datetime]]] = {}
        async with self._db.begin() as conn:
            for row in (await conn.execute(query)).all():
                out.setdefault(row.household_id, []).append((row.id, row.created_at))
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
        return [(rule_from_row(row), row.scope, row.period_end) for row in rows]

    async def next_period_end(self) -> int | None:
        """The earliest end of a period over which an alert is open or a `for` wait runs (None
        when there is none): the periodic check sleeps until then."""
        s = alert_states.c
        query = select(func.min(s.period_end)).where(
            or_(s.firing_since.is_not(None), s.pending_since.is_not(None))
        )
        async with self._db.begin() as conn:
            return await conn.scalar(query)

    async def prune_usage(self, before_ms: int) -> int:
        """Forget usage buckets that started before `before_ms` (no rule looks that far back)."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                delete(alert_usage).where(alert_usage.c.period_start < before_ms)
            )
        return result.rowcount


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
        return {row.id: alert_from_row(row) for row in (await self.conn.execute(query)).all()}

    async def seen(self, device_ids: Collection[str]) -> dict[str, Seen]:
        """What was last heard from each of these devices (those heard from at all)."""
        if not device_ids:
            return {}
        query = select(alert_device_seen).where(alert_device_seen.c.device_id.in_(device_ids))
        return {
            row.device_id: Seen(row.last_ts, row.power_w, row.power_ts)
            for row in (await self.conn.execute(query)).all()
        }

    async def email_recipients(self, household_id: str) -> builtins.list[str]:
        """The e-mails of the household's active members who asked for alert e-mails."""
        m = household_members.c
        query = (
            select(users.c.email)
            .join(household_members, m.user_id == users.c.id)
            .where(m.household_id == household_id, m.notify_email == true())
            .where(users.c.disabled == false())
            .order_by(users.c.email)
        )
        return list((await self.conn.scalars(query)).all())

    async def households_seen(self, household_ids: Collection[str]) -> dict[str, dict[str, Seen]]:
        """What was last heard from every device of each household."""
        if not household_ids:
            return {}
        query = (
            select(devices.c.household_id, alert_device_seen)
            .join(alert_device_seen, alert_device_seen.c.device_id == devices.c.id)
            .where(devices.c.household_id.in_(list(household_ids)))
        )
        out: dict[str, dict[str, Seen]] = {}
        for row in (await self.conn.execute(query)).all():
            out.setdefault(row.household_id, {})[row.device_id] = Seen(
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

    async def usage_of(
        self, household_id: str, granularity: str, period_start: int
    ) -> dict[str, tuple[float, float]]:
        """(kWh, cost) of one period of each of the household's devices that has it."""
        c = alert_usage.c
        query = (
            select(c.device_id, c.energy_kwh, c.cost)
            .join(devices, devices.c.id == c.device_id)
            .where(
                devices.c.household_id == household_id,
                c.granularity == granularity,
                c.period_start == period_start,
            )
        )
        rows = (await self.conn.execute(query)).all()
        return {row.device_id: (float(row.energy_kwh), float(row.cost)) for row in rows}

    async def layouts(self, household_ids: Collection[str]) -> dict[str, Layout]:
        """How each household's devices add up (core.consumption), every one asked included."""
        placed: dict[str, list[Placement]] = {h: [] for h in household_ids}
        if household_ids:
            c = devices.c
            query = select(c.id, c.household_id, c.role, c.parent_id).where(
                c.household_id.in_(household_ids)
            )
            for row in (await self.conn.execute(query)).all():
                placed[row.household_id].append(Placement(row.id, Role(row.role), row.parent_id))
        return {h: Layout.of(p) for h, p in placed.items()}

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
        await insert_transitions(self.conn, outcome.transitions)
        if outcome.deliveries:
            await self.conn.execute(insert(alert_deliveries), [vars(d) for d in outcome.deliveries])
