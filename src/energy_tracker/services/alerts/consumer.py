"""The alerts consumer (group `alerts`): `energy-readings` and `usage-events` in, rules
evaluated, `alert-events` out; plus the periodic check for what no message announces.

One batch is evaluated in one transaction that writes the new evaluation states, the alerts,
their transitions and their notifications together (see store.py). Ids are derived from what
happened (lifecycle.py), and a state remembers the newest instant it saw, so a batch delivered
again after a crash, before its offsets were committed, finds its work done: no second alert,
no second notification. The transitions are published right after the commit and marked; any
left unmarked (the process died in between) are published by the periodic check, so a consumer
of `alert-events` may see one twice and deduplicates on its `id`.

Time: instant power is judged at each reading's own timestamp (readings older than STALE_MS
are history, not news, and judge nothing); silence, and energy or cost so far in a period, are
judged at the service's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Histogram

from energy_tracker.core.bus.base import EventBus, Message
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected
from energy_tracker.core.energy import period_end
from energy_tracker.core.events import (
    ALERT_EVENTS,
    ENERGY_READINGS,
    USAGE_EVENTS,
    MalformedEvent,
    Reading,
    alert_transitioned,
    parse_readings_recorded,
    parse_usage_updated,
)
from energy_tracker.core.failures import TransientError, is_transient
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.core.stores.timeseries.base import Granularity
from energy_tracker.services.alerts.lifecycle import Transition, apply_steps
from energy_tracker.services.alerts.models import (
    ALL_DEVICES,
    AlertRule,
    alert_id,
    datetime_to_ms,
)
from energy_tracker.services.alerts.notify import Dispatcher, SmtpServer
from energy_tracker.services.alerts.rules import EvalState, run
from energy_tracker.services.alerts.store import AlertStore, Evaluation, Seen, UsageValue
from energy_tracker.services.devices.models import DeviceContext
from energy_tracker.services.devices.store import DeviceStore

log = logging.getLogger(__name__)

GROUP = "alerts"
READING_METRICS = ("power_w", "silence")
USAGE_METRICS = ("energy_kwh", "cost")
# A reading older than this (by the service's clock) is history: it judges no power rule.
STALE_MS = 15 * 60 * 1000
CHECK_INTERVAL_S = 1.0
# How long a transition may stay unpublished before the periodic check publishes it: long
# enough that the consumer that wrote it has normally done so itself.
PUBLISH_GRACE = timedelta(seconds=5)
PAGE = 500
# Usage buckets kept for summing: longer than any month, DST included.
USAGE_KEEP_MS = 40 * 86_400_000
PRUNE_EVERY_S = 3600.0

TRANSITIONS = Counter("et_alert_transitions_total", "Alert transitions recorded", ["state"])
EVALUATION_LAG = Histogram(
    "et_alert_evaluation_lag_seconds",
    "From a reading's timestamp to the alert transition it caused (power rules)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


@dataclass
class Task:
    """Observations of one rule over one scope, to evaluate in order."""

    rule: AlertRule
    scope: str
    samples: list[tuple[int, float]]  # (at ms, value)
    period_end: int | None = None  # energy and cost: when the observed period ends
    only_if_stored: bool = False  # a reading only matters to a silence state that exists
    unless_firing: bool = False  # the periodic silence check leaves open alerts alone


TaskSource = Callable[[Evaluation], Awaitable[list[Task]]]


def _idle(state: EvalState) -> bool:
    return state.pending_since is None and state.firing_since is None


class AlertEvaluator:
    """Turns readings, usage updates and the clock into alert transitions."""

    def __init__(
        self,
        bus: EventBus,
        store: AlertStore,
        devices: DeviceStore,
        *,
        max_gap_ms: int,
        clock: Callable[[], float] = time.time,
        on_deliveries: Callable[[], None] = lambda: None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.devices = devices
        self.max_gap_ms = max_gap_ms
        self.clock = clock
        self.on_deliveries = on_deliveries
        self._pruned_at = 0.0

    def loops(self) -> list[ConsumeLoop]:
        return [
            ConsumeLoop(self.bus, ENERGY_READINGS, GROUP, self.handle_readings),
            ConsumeLoop(self.bus, USAGE_EVENTS, GROUP, self.handle_usage),
        ]

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    # -- energy-readings: instant power and the end of a silence ---------------------------------

    async def handle_readings(self, messages: Sequence[Message]) -> list[Rejected]:
        # Rules are looked up by the message keys (device ids) first, and only the messages of
        # watched devices are parsed: most readings have no rule, and parsing is the cost.
        # An unknown (deleted) device has no rules; the usage consumer dead-letters it.
        contexts = await self.devices.contexts(
            list({m.key.decode(errors="replace") for m in messages})
        )
        owner_of = {d: c.owner_id for d, c in contexts.items()}
        rules = await self.store.rules_watching(owner_of, set(owner_of.values()), READING_METRICS)
        if not rules:
            return []
        summed_owners = {r.owner_id for r in rules if r.device_id is None}
        watched = {r.device_id for r in rules if r.device_id is not None}
        watched.update(d for d, owner in owner_of.items() if owner in summed_owners)
        rejected: list[Rejected] = []
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for message in messages:
            if message.key.decode(errors="replace") not in watched:
                continue
            try:
                for reading in parse_readings_recorded(message.value):
                    by_device[reading.device_id].append(reading)
            except MalformedEvent as exc:
                rejected.append(Rejected(message, str(exc)))
        batch = {d: sorted(rs, key=lambda r: r.ts) for d, rs in by_device.items() if d in owner_of}
        if batch:
            await self._evaluate(self._reading_tasks(rules, batch, owner_of, self._now_ms()))
        return rejected

    def _reading_tasks(
        self,
        rules: list[AlertRule],
        batch: dict[str, list[Reading]],
        owner_of: dict[str, str],
        now_ms: int,
    ) -> TaskSource:
        summing = {r.owner_id for r in rules if r.metric == "power_w" and r.device_id is None}

        def watched(rule: AlertRule) -> list[str]:
            if rule.device_id is not None:
                return [rule.device_id] if rule.device_id in batch else []
            return [d for d in batch if owner_of[d] == rule.owner_id]

        async def tasks(ev: Evaluation) -> list[Task]:
            before = await ev.owners_seen(summing)
            tracked = {d for d in batch if owner_of[d] in summing}
            tracked.update(d for r in rules if r.metric == "silence" for d in watched(r))
            known = await ev.seen(tracked)
            await ev.put_seen({d: _heard(batch[d]) for d in tracked}, known)
            out = []
            for rule in rules:
                if rule.metric == "silence":
                    # A reading ends any silence: judged at the clock, like the silence was.
                    out += [
                        Task(rule, d, [(now_ms, 0.0)], only_if_stored=True) for d in watched(rule)
                    ]
                elif rule.device_id is not None:
                    samples = [
                        (r.ts, r.power_w)
                        for r in batch[rule.device_id]
                        if r.power_w is not None and r.ts >= now_ms - STALE_MS
                    ]
                    out.append(Task(rule, rule.device_id, samples))
                else:
                    readings = sorted(
                        (r for d in watched(rule) for r in batch[d]), key=lambda r: r.ts
                    )
                    samples = self._summed_power(readings, before.get(rule.owner_id, {}), now_ms)
                    out.append(Task(rule, ALL_DEVICES, samples))
            return out

        return tasks

    def _summed_power(
        self, readings: list[Reading], seen: dict[str, Seen], now_ms: int
    ) -> list[tuple[int, float]]:
        """The owner's total power at each of these readings: each device's newest power,
        leaving out devices not heard from within max_gap (off, or gone)."""
        latest = {d: (s.power_ts, s.power_w) for d, s in seen.items() if s.power_ts is not None}
        samples = []
        for r in readings:
            if r.power_w is None:
                continue
            known = latest.get(r.device_id)
            if known is None or known[0] is None or known[0] <= r.ts:
                latest[r.device_id] = (r.ts, r.power_w)
            if r.ts < now_ms - STALE_MS:
                continue
            total = sum(
                w or 0.0
                for ts, w in latest.values()
                if ts is not None and ts >= r.ts - self.max_gap_ms
            )
            samples.append((r.ts, total))
        return samples

    # -- usage-events: energy and cost so far in the current period ------------------------------

    async def handle_usage(self, messages: Sequence[Message]) -> list[Rejected]:
        rejected: list[Rejected] = []
        updates: list[UsageValue] = []
        for message in messages:
            try:
                u = parse_usage_updated(message.value)
            except MalformedEvent as exc:
                rejected.append(Rejected(message, str(exc)))
                continue
            if u.granularity in ("hour", "day", "month"):
                updates.append(
                    UsageValue(
                        u.device_id,
                        u.granularity,
                        u.period_start_ms,
                        u.version,
                        u.energy_kwh,
                        u.cost,
                    )
                )
        contexts = await self.devices.contexts({u.device_id for u in updates})
        updates = [u for u in updates if u.device_id in contexts]
        owners = {c.owner_id for c in contexts.values()}
        rules = await self.store.rules_watching(contexts, owners, USAGE_METRICS)
        per_device = {(r.device_id, r.period) for r in rules if r.device_id is not None}
        per_owner = {(r.owner_id, r.period) for r in rules if r.device_id is None}
        updates = [
            u
            for u in updates
            if (u.device_id, u.granularity) in per_device
            or (contexts[u.device_id].owner_id, u.granularity) in per_owner
        ]
        if updates:
            await self._evaluate(self._usage_tasks(rules, updates, contexts, self._now_ms()))
        return rejected

    def _usage_tasks(
        self,
        rules: list[AlertRule],
        updates: list[UsageValue],
        contexts: dict[str, DeviceContext],
        now_ms: int,
    ) -> TaskSource:
        async def tasks(ev: Evaluation) -> list[Task]:
            # Only a newer version of a bucket is news; and only a period still running is
            # "so far" (a late correction of yesterday raises nothing today).
            current = []
            for v in await ev.newer_usage(updates):
                zone = ZoneInfo(contexts[v.device_id].timezone)
                end = period_end(v.period_start, Granularity(v.granularity), zone)
                if end > now_ms:
                    current.append((v, end))
            out = []
            for rule in rules:
                mine = [
                    (v, end)
                    for v, end in current
                    if v.granularity == rule.period
                    and (
                        v.device_id == rule.device_id
                        if rule.device_id is not None
                        else contexts[v.device_id].owner_id == rule.owner_id
                    )
                ]
                if not mine:
                    continue
                v, end = max(mine, key=lambda item: item[0].period_start)
                if rule.device_id is not None:
                    energy, cost, scope = v.energy_kwh, v.cost, rule.device_id
                else:
                    energy, cost = await ev.usage_sum(rule.owner_id, rule.period, v.period_start)
                    scope = ALL_DEVICES
                value = energy if rule.metric == "energy_kwh" else cost
                out.append(Task(rule, scope, [(now_ms, value)], period_end=end))
            return out

        return tasks

    # -- the periodic check --------------------------------------------------------------------

    async def check(self) -> None:
        """One pass of what time alone triggers: silences, periods that ended, transitions left
        unpublished, and (hourly) forgetting old usage buckets."""
        now_ms = self._now_ms()
        await self._check_silence(now_ms)
        await self._close_periods(now_ms)
        await self.publish_leftovers()
        if self.clock() - self._pruned_at >= PRUNE_EVERY_S:
            await self.store.prune_usage(now_ms - USAGE_KEEP_MS)
            self._pruned_at = self.clock()

    async def _check_silence(self, now_ms: int) -> None:
        after = ""
        while rules := await self.store.rules_page(("silence",), after, PAGE):
            after = rules[-1].id
            devices = await self.store.owner_devices({r.owner_id for r in rules})
            pairs = [
                (rule, device, max(created, rule.created_at))
                for rule in rules
                for device, created in devices.get(rule.owner_id, [])
                if rule.device_id in (None, device)
            ]

            async def tasks(
                ev: Evaluation, pairs: list[tuple[AlertRule, str, datetime]] = pairs
            ) -> list[Task]:
                seen = await ev.seen({device for _, device, _ in pairs})
                out = []
                for rule, device, since in pairs:
                    last = seen[device].last_ts if device in seen else datetime_to_ms(since)
                    silent_s = max(0.0, (now_ms - last) / 1000)
                    out.append(Task(rule, device, [(now_ms, silent_s)], unless_firing=True))
                return out

            await self._evaluate(tasks)

    async def _close_periods(self, now_ms: int) -> None:
        ended = await self.store.states_past_period(now_ms, PAGE)

        async def tasks(ev: Evaluation) -> list[Task]:
            # A new period starts from nothing: observe zero at the instant the old one ended.
            return [Task(rule, scope, [(end, 0.0)]) for rule, scope, end in ended]

        if ended:
            await self._evaluate(tasks)

    # -- writing and publishing ----------------------------------------------------------------

    async def _evaluate(self, source: TaskSource) -> None:
        """Evaluate the tasks `source` builds and write the outcomes in one transaction; a write
        that lost a race (or a database that is away) is a TransientError: the consume loop
        then retries the batch, which the new state makes safe."""
        now = self._now()
        transitions: list[Transition] = []
        notify = False
        try:
            async with self.store.evaluation() as ev:
                tasks = await source(ev)
                keys = [(t.rule.id, t.scope) for t in tasks]
                stored = await ev.states(keys)
                open_ids = {
                    key: alert_id(key[0], key[1], s.state.firing_since)
                    for key, s in stored.items()
                    if s.state.firing_since is not None
                }
                open_alerts = await ev.alerts(set(open_ids.values()))
                for t, key in zip(tasks, keys, strict=True):
                    before = stored.get(key)
                    if before is None and t.only_if_stored:
                        continue
                    if before is not None and t.unless_firing and key in open_ids:
                        continue
                    state = before.state if before is not None else EvalState()
                    steps = run(t.rule.condition, state, t.samples)
                    opened = open_alerts.get(open_ids[key]) if key in open_ids else None
                    outcome = apply_steps(t.rule, t.scope, state, opened, steps, now)
                    if not outcome.alerts and (
                        outcome.state == state or (_idle(state) and _idle(outcome.state))
                    ):
                        continue  # nothing changed, or nothing pending or open: no write
                    await ev.save(t.rule.id, t.scope, before, outcome, t.period_end)
                    transitions += outcome.transitions
                    notify = notify or bool(outcome.deliveries)
        except Exception as exc:
            if isinstance(exc, Conflict) or is_transient(exc):
                raise TransientError(f"alert evaluation not written: {exc}") from exc
            raise
        for event in transitions:
            TRANSITIONS.labels(event.state).inc()
            if event.payload["metric"] == "power_w":
                EVALUATION_LAG.observe(max(0.0, now.timestamp() - event.payload["at_ms"] / 1000))
        if notify:
            self.on_deliveries()
        await self.publish(transitions)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def publish(self, transitions: Collection[Transition]) -> None:
        """Put transitions on `alert-events` and mark them; on failure they stay unmarked for
        the periodic check to publish."""
        if not transitions:
            return
        try:
            await self.bus.publish(
                ALERT_EVENTS, [alert_transitioned(t.owner_id, t.payload) for t in transitions]
            )
            await self.store.mark_published([t.id for t in transitions])
        except Exception as exc:
            log.warning(
                "publishing %d alert transition(s) failed (%s); will retry", len(transitions), exc
            )

    async def publish_leftovers(self) -> None:
        """Publish transitions whose writer died before it could."""
        before = self._now() - PUBLISH_GRACE
        while rows := await self.store.unpublished(before, PAGE):
            await self.bus.publish(
                ALERT_EVENTS, [alert_transitioned(owner, payload) for _, owner, payload in rows]
            )
            await self.store.mark_published([tid for tid, _, _ in rows])
            if len(rows) < PAGE:
                break


def _heard(readings: list[Reading]) -> Seen:
    """What a batch of one device's readings (in time order) says about it."""
    powered = [r for r in readings if r.power_w is not None]
    last_power = powered[-1] if powered else None
    return Seen(
        readings[-1].ts,
        last_power.power_w if last_power else None,
        last_power.ts if last_power else None,
    )


class PeriodicCheck:
    """Runs `AlertEvaluator.check` every CHECK_INTERVAL_S until stopped."""

    def __init__(self, evaluator: AlertEvaluator, interval_s: float = CHECK_INTERVAL_S) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.evaluator.check()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("periodic alert check failed; trying again")
                else:
                    log.info("periodic alert check skipped: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    def stop(self) -> None:
        self._stopping.set()


class AlertService:
    """The alerts service's parts, for the composition root to run and the routes to use."""

    def __init__(
        self,
        bus: EventBus,
        store: AlertStore,
        devices: DeviceStore,
        *,
        max_gap_ms: int,
        smtp: SmtpServer | None,
        deny_private: bool,
    ) -> None:
        self.store = store
        self.deny_private = deny_private
        self.dispatcher = Dispatcher(store, smtp=smtp, deny_private=deny_private)
        self.evaluator = AlertEvaluator(
            bus, store, devices, max_gap_ms=max_gap_ms, on_deliveries=self.dispatcher.wake
        )
        self.check = PeriodicCheck(self.evaluator)

    def loops(self) -> list[ConsumeLoop]:
        """The consume loops of group `alerts`."""
        return self.evaluator.loops()

    def workers(self) -> dict[str, PeriodicCheck | Dispatcher]:
        """The other background loops, by name; each has run() and stop()."""
        return {"alerts:check": self.check, "alerts:dispatcher": self.dispatcher}
