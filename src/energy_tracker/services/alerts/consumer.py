"""The alerts consumer (group `alerts`): `energy-readings` and `usage-events` in, rules
evaluated, `alert-events` out; plus the periodic check for what no message announces.

Each input is turned into tasks (observations.py), evaluated and written in one transaction
(evaluate.py), and the transitions it recorded are published right after the commit
(publish.py). A batch delivered again after a crash, before its offsets were committed, finds
its work done: no second alert, no second notification.

Time: instant power is judged at each reading's own timestamp (readings older than STALE_MS
are history, not news, and judge nothing); silence, and energy or cost so far in a period, are
judged at the service's clock.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from energy_tracker.core.bus.base import EventBus, Message
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected
from energy_tracker.core.consumption import Layout
from energy_tracker.core.directory import DeviceContext, DeviceDirectory
from energy_tracker.core.events import (
    ENERGY_READINGS,
    USAGE_EVENTS,
    MalformedEvent,
    Reading,
    parse_readings_recorded,
    parse_usage_updated,
)
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.services.alerts.anomaly import HourlySamples, Scope
from energy_tracker.services.alerts.evaluate import Evaluated, evaluate
from energy_tracker.services.alerts.models import AlertRule, UsageValue, datetime_to_ms
from energy_tracker.services.alerts.observations import (
    AnomalyTasks,
    PeriodEndTasks,
    Pricing,
    ReadingTasks,
    SilenceTasks,
    TaskSource,
    UsageTasks,
)
from energy_tracker.services.alerts.publish import PAGE, TransitionPublisher
from energy_tracker.services.alerts.rules import EvalState, rising_due
from energy_tracker.services.alerts.store import AlertStore

GROUP = "alerts"
READING_METRICS = ("power_w", "silence")
USAGE_METRICS = ("energy_kwh", "cost")
# Usage buckets kept for summing: longer than any month, DST included.
USAGE_KEEP_MS = 40 * 86_400_000
PRUNE_EVERY_S = 3600.0


class AlertEvaluator:
    """Turns readings, usage updates and the clock into alert transitions."""

    def __init__(
        self,
        bus: EventBus,
        store: AlertStore,
        directory: DeviceDirectory,
        *,
        max_gap_ms: int,
        clock: Callable[[], float] = time.time,
        on_deliveries: Callable[[], None] = lambda: None,
        on_change: Callable[[], None] = lambda: None,
        series: SeriesStore | None = None,
    ) -> None:
        self.bus = bus
        self.series = series  # the hours anomaly rules judge; None: those rules wait
        self._anomaly_samples = HourlySamples(series) if series is not None else None
        self.store = store
        self.directory = directory
        self.max_gap_ms = max_gap_ms
        self.clock = clock
        self.on_deliveries = on_deliveries
        # New observations were judged: a silence may have ended (its next one can come sooner
        # than the check planned), or an alert opened over a period that ends.
        self.on_change = on_change
        self.publisher = TransitionPublisher(bus, store.transitions)
        self._pruned_at = 0.0

    def loops(self) -> list[ConsumeLoop]:
        """The consume loops of group `alerts`, one per input topic."""
        return [
            ConsumeLoop(self.bus, ENERGY_READINGS, GROUP, self.handle_readings),
            ConsumeLoop(self.bus, USAGE_EVENTS, GROUP, self.handle_usage),
        ]

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- energy-readings: instant power and the end of a silence ---------------------------------

    async def handle_readings(self, messages: Sequence[Message]) -> list[Rejected]:
        """Evaluate the power and silence rules that watch these readings' devices."""
        # Rules are looked up by the message keys (device ids) first, and only the messages of
        # watched devices are parsed: most readings have no rule, and parsing is the cost.
        # An unknown (deleted) device has no rules; the usage consumer dead-letters it.
        contexts = await self.directory.contexts(
            list({m.key.decode(errors="replace") for m in messages})
        )
        household_of = {d: c.household_id for d, c in contexts.items()}
        rules = await self.store.rules.watching(
            household_of, set(household_of.values()), READING_METRICS
        )
        if not rules:
            return []
        summed = {r.household_id for r in rules if r.device_id is None}
        watched = {r.device_id for r in rules if r.device_id is not None}
        watched.update(d for d, household in household_of.items() if household in summed)
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
        batch = {
            d: sorted(rs, key=lambda r: r.ts) for d, rs in by_device.items() if d in household_of
        }
        if batch:
            await self._evaluate(
                ReadingTasks(rules, batch, household_of, self._now_ms(), self.max_gap_ms)
            )
            self.on_change()
        return rejected

    # -- usage-events: energy and cost so far in the current period ------------------------------

    async def handle_usage(self, messages: Sequence[Message]) -> list[Rejected]:
        """Evaluate the energy and cost rules that watch these buckets' devices."""
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
        contexts = await self.directory.contexts({u.device_id for u in updates})
        updates = [u for u in updates if u.device_id in contexts]
        homes = {c.household_id for c in contexts.values()}
        rules = await self.store.rules.watching(contexts, homes, (*USAGE_METRICS, "anomaly"))
        hours = {u.device_id for u in updates if u.granularity == "hour"}
        await self._judge_anomalies([r for r in rules if r.metric == "anomaly"], hours, contexts)
        rules = [r for r in rules if r.metric != "anomaly"]
        per_device = {(r.device_id, r.period) for r in rules if r.device_id is not None}
        per_household = {(r.household_id, r.period) for r in rules if r.device_id is None}
        updates = [
            u
            for u in updates
            if (u.device_id, u.granularity) in per_device
            or (contexts[u.device_id].household_id, u.granularity) in per_household
        ]
        if updates:
            pricing = await self._pricing(
                {r.household_id for r in rules if r.metric == "cost" and r.device_id is None}
            )
            await self._evaluate(UsageTasks(rules, updates, contexts, self._now_ms(), pricing))
            self.on_change()
        return rejected

    async def _pricing(self, households: set[str]) -> Pricing | None:
        """What pricing these households' exchange needs (summed cost rules of homes without a
        meter but with solar or a battery); None without a time-series store (their cost is
        then the loads' own) or a household to price."""
        if self.series is None or not households:
            return None
        members: dict[str, list[DeviceContext]] = {}
        for ctx in await self.directory.in_households(households):
            members.setdefault(ctx.household_id, []).append(ctx)
        profiles = await self.directory.household_profiles(households)
        zones = {h: p.timezone for h, p in profiles.items()}
        return Pricing(self.series, members, zones)

    async def _judge_anomalies(
        self, rules: Sequence[AlertRule], devices: set[str], contexts: Mapping[str, DeviceContext]
    ) -> None:
        """Evaluate the anomaly rules on these devices (whose hour buckets changed), or on their
        households, over the hours that ended lately."""
        homes = {contexts[d].household_id for d in devices}
        concerned = [
            r
            for r in rules
            if (r.device_id in devices if r.device_id is not None else r.household_id in homes)
        ]
        if not concerned or self._anomaly_samples is None:
            return
        households = {r.household_id for r in concerned}
        profiles = await self.directory.household_profiles(households)
        summed = {r.household_id for r in concerned if r.device_id is None}
        members = await self.directory.in_households(summed) if summed else []
        scopes: dict[str, Scope] = {}
        for rule in concerned:
            profile = profiles.get(rule.household_id)
            country = profile.country if profile else None
            if rule.device_id is not None:
                zone = ZoneInfo(contexts[rule.device_id].timezone)
                scopes[rule.id] = Scope({rule.device_id: 1.0}, zone, country)
            else:
                home = Layout.of(
                    c.placement for c in members if c.household_id == rule.household_id
                )
                zone = ZoneInfo(profile.timezone if profile else "UTC")
                scopes[rule.id] = Scope(home.weights(), zone, country)
        await self._evaluate(AnomalyTasks(concerned, scopes, self._anomaly_samples, self._now_ms()))
        self.on_change()

    # -- the clock -------------------------------------------------------------------------------

    async def check(self) -> int:
        """One pass of what time alone triggers: silences, periods that ended, transitions left
        unpublished, and (hourly) forgetting old usage buckets. Returns the next instant (epoch
        ms) at which time alone can trigger something of what is stored now; a new rule or an
        evaluation of new observations may bring it closer (`on_change`)."""
        now_ms = self._now_ms()
        due = [await self._check_silence(now_ms)]
        await self._close_periods(now_ms)
        due.append(await self.store.evaluations.next_period_end())
        await self.publisher.publish_leftovers(self._now())
        leftovers = self.publisher.leftovers_due()
        due.append(None if leftovers is None else datetime_to_ms(leftovers))
        if self.clock() - self._pruned_at >= PRUNE_EVERY_S:
            await self.store.evaluations.prune_usage(now_ms - USAGE_KEEP_MS)
            self._pruned_at = self.clock()
        due.append(round((self._pruned_at + PRUNE_EVERY_S) * 1000))
        return min(d for d in due if d is not None)

    async def _check_silence(self, now_ms: int) -> int | None:
        """Judge every watched device's silence; the next instant the clock alone changes one,
        a device added meanwhile included."""
        due = Evaluated()
        after = ""
        while rules := await self.store.rules.page(("silence",), after, PAGE):
            after = rules[-1].id
            devices = await self.store.evaluations.household_devices(
                {r.household_id for r in rules}
            )
            pairs = [
                (rule, device, max(created, rule.created_at))
                for rule in rules
                for device, created in devices.get(rule.household_id, [])
                if rule.device_id in (None, device)
            ]
            due.due_at((await self._evaluate(SilenceTasks(pairs, now_ms))).due)
            for rule in rules:
                if rule.device_id is None:
                    # A device added from now on is silent from when it was added, at the soonest.
                    due.due_at(rising_due(rule.condition, EvalState(), now_ms))
        return due.due

    async def _close_periods(self, now_ms: int) -> None:
        ended = await self.store.evaluations.states_past_period(now_ms, PAGE)
        if ended:
            await self._evaluate(PeriodEndTasks(ended))

    async def _evaluate(self, source: TaskSource) -> Evaluated:
        done = await evaluate(self.store.evaluations, source, self._now())
        if done.notify:
            self.on_deliveries()
        await self.publisher.publish(done.transitions)
        return done
