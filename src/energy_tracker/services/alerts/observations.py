"""What each input asks evaluation to judge: readings, usage updates, silence and periods that
ended each become `Task`s (a rule, a scope and samples in order), built inside the evaluation's
transaction from what it reads there (see consumer.py for when each is built)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from energy_tracker.core import bucket_queries as queries
from energy_tracker.core.consumption import Layout, household_total
from energy_tracker.core.directory import DeviceContext
from energy_tracker.core.energy import period_end
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity, SeriesStore
from energy_tracker.services.alerts.anomaly import HourlySamples, Scope
from energy_tracker.services.alerts.models import (
    ALL_DEVICES,
    AlertRule,
    UsageValue,
    datetime_to_ms,
)
from energy_tracker.services.alerts.power import STALE_MS, heard, summed_power
from energy_tracker.services.alerts.store.evaluation import Evaluation


@dataclass
class Task:
    """Observations of one rule over one scope, to evaluate in order."""

    rule: AlertRule
    scope: str
    samples: list[tuple[int, float]]  # (at ms, value)
    period_end: int | None = None  # energy and cost: when the observed period ends
    only_if_stored: bool = False  # a reading only matters to a silence state that exists
    unless_firing: bool = False  # the periodic silence check leaves open alerts alone
    silent_since: int | None = None  # a silence: its value is the seconds since this instant


TaskSource = Callable[[Evaluation], Awaitable[list[Task]]]
"""Builds the tasks of one evaluation from what it reads inside the evaluation's transaction."""


@dataclass(frozen=True)
class ReadingTasks:
    """Instant power (per device, or summed over a household's devices) and the end of a silence,
    from one batch of readings of watched devices (each device's in time order)."""

    rules: Sequence[AlertRule]
    batch: Mapping[str, Sequence[Reading]]
    household_of: Mapping[str, str]
    now_ms: int
    max_gap_ms: int

    def _watched(self, rule: AlertRule) -> list[str]:
        if rule.device_id is not None:
            return [rule.device_id] if rule.device_id in self.batch else []
        return [d for d in self.batch if self.household_of[d] == rule.household_id]

    async def __call__(self, ev: Evaluation) -> list[Task]:
        summing = {
            r.household_id for r in self.rules if r.metric == "power_w" and r.device_id is None
        }
        before = await ev.households_seen(summing)
        layouts = await ev.layouts(summing)
        tracked = {d for d in self.batch if self.household_of[d] in summing}
        tracked.update(d for r in self.rules if r.metric == "silence" for d in self._watched(r))
        known = await ev.seen(tracked)
        await ev.put_seen({d: heard(self.batch[d]) for d in tracked}, known)
        out = []
        for rule in self.rules:
            if rule.metric == "silence":
                # A reading ends any silence: judged at the clock, like the silence was.
                out += [
                    Task(rule, d, [(self.now_ms, 0.0)], only_if_stored=True)
                    for d in self._watched(rule)
                ]
            elif rule.device_id is not None:
                samples = [
                    (r.ts, r.power_w)
                    for r in self.batch[rule.device_id]
                    if r.power_w is not None and r.ts >= self.now_ms - STALE_MS
                ]
                out.append(Task(rule, rule.device_id, samples))
            else:
                readings = sorted(
                    (r for d in self._watched(rule) for r in self.batch[d]), key=lambda r: r.ts
                )
                seen = before.get(rule.household_id, {})
                weights = layouts[rule.household_id].weights()
                samples = summed_power(readings, seen, self.now_ms, self.max_gap_ms, weights)
                out.append(Task(rule, ALL_DEVICES, samples))
        return out


@dataclass(frozen=True)
class Pricing:
    """What pricing a household's exchange quarter by quarter needs (`price_exchange`): the
    time-series store, and each household's devices and zone (its tariff's hours)."""

    series: SeriesStore
    members: Mapping[str, Sequence[DeviceContext]]
    zones: Mapping[str, str]

    async def cost(
        self, household_id: str, granularity: Granularity, start: int, end: int, tz: ZoneInfo
    ) -> float | None:
        """The cost of the period start..end (in `tz`) of an unmetered home with production or
        a battery, as `GET /usage` prices it; None for any other home (its buckets' cost is
        right)."""
        members = self.members.get(household_id, ())
        if not Layout.of(c.placement for c in members).priced_per_quarter:
            return None
        periods = await queries.household(
            self.series,
            members,
            granularity,
            start,
            end,
            tz,
            members[0].tariff,
            ZoneInfo(self.zones.get(household_id, tz.key)),
        )
        return sum(p.bucket.cost for p in periods)


@dataclass(frozen=True)
class UsageTasks:
    """Energy and cost so far in the current period, per device or summed over a household's
    (its cost priced on what it exchanged when `pricing` is given and the home needs it)."""

    rules: Sequence[AlertRule]
    updates: Sequence[UsageValue]
    contexts: Mapping[str, DeviceContext]
    now_ms: int
    pricing: Pricing | None = None

    async def __call__(self, ev: Evaluation) -> list[Task]:
        # Only a newer version of a bucket is news; and only a period still running is
        # "so far" (a late correction of yesterday raises nothing today).
        current = []
        for v in await ev.newer_usage(self.updates):
            zone = ZoneInfo(self.contexts[v.device_id].timezone)
            end = period_end(v.period_start, Granularity(v.granularity), zone)
            if end > self.now_ms:
                current.append((v, end))
        out = []
        for rule in self.rules:
            mine = [(v, end) for v, end in current if self._concerns(rule, v)]
            if not mine:
                continue
            v, end = max(mine, key=lambda item: item[0].period_start)
            if rule.device_id is not None:
                energy, cost, scope = v.energy_kwh, v.cost, rule.device_id
            else:
                layout = (await ev.layouts({rule.household_id}))[rule.household_id]
                per_device = await ev.usage_of(rule.household_id, rule.period, v.period_start)
                energy, cost = household_total(
                    layout,
                    {d: kwh for d, (kwh, _) in per_device.items()},
                    {d: money for d, (_, money) in per_device.items()},
                )
                scope = ALL_DEVICES
                if rule.metric == "cost" and self.pricing is not None:
                    zone = ZoneInfo(self.contexts[v.device_id].timezone)
                    granularity = Granularity(rule.period)
                    priced = await self.pricing.cost(
                        rule.household_id, granularity, v.period_start, end, zone
                    )
                    cost = cost if priced is None else priced
            value = energy if rule.metric == "energy_kwh" else cost
            out.append(Task(rule, scope, [(self.now_ms, value)], period_end=end))
        return out

    def _concerns(self, rule: AlertRule, v: UsageValue) -> bool:
        if v.granularity != rule.period:
            return False
        if rule.device_id is not None:
            return v.device_id == rule.device_id
        return self.contexts[v.device_id].household_id == rule.household_id


@dataclass(frozen=True)
class SilenceTasks:
    """How long each (rule, device) has been silent at the clock; an open alert is left alone."""

    pairs: Sequence[tuple[AlertRule, str, datetime]]  # (rule, device, watched since)
    now_ms: int

    async def __call__(self, ev: Evaluation) -> list[Task]:
        seen = await ev.seen({device for _, device, _ in self.pairs})
        out = []
        for rule, device, since in self.pairs:
            last = seen[device].last_ts if device in seen else datetime_to_ms(since)
            silent_s = max(0.0, (self.now_ms - last) / 1000)
            out.append(
                Task(
                    rule,
                    device,
                    [(self.now_ms, silent_s)],
                    unless_firing=True,
                    silent_since=min(last, self.now_ms),
                )
            )
        return out


@dataclass(frozen=True)
class PeriodEndTasks:
    """A new period starts from nothing: observe zero at the instant the old one ended."""

    ended: Sequence[tuple[AlertRule, str, int]]  # (rule, scope, period end)

    async def __call__(self, ev: Evaluation) -> list[Task]:
        return [Task(rule, scope, [(end, 0.0)]) for rule, scope, end in self.ended]


# Anomaly rules judge the hours that ended within this much before the clock (an hour's usage
# events go on arriving after it ends; hours judged already are skipped by the rule's state).
ANOMALY_LOOKBACK_MS = 3 * 3_600_000


@dataclass(frozen=True)
class AnomalyTasks:
    """The anomaly scores of the hours that ended lately (`anomaly.py`), per rule over its
    device or its household's devices summed."""

    rules: Sequence[AlertRule]
    scopes: Mapping[str, Scope]  # by rule id
    samples_of: HourlySamples
    now_ms: int

    async def __call__(self, ev: Evaluation) -> list[Task]:
        out = []
        for rule in self.rules:
            samples = await self.samples_of(
                self.scopes[rule.id], self.now_ms - ANOMALY_LOOKBACK_MS, self.now_ms
            )
            out.append(Task(rule, rule.device_id or ALL_DEVICES, samples))
        return out
