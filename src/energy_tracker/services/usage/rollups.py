"""Keeps devices' buckets equal to what their stored readings say, however late they arrive.

For the readings just stored, the quarters their segments touch are recomputed from the raw
series; the hours, local days and local months holding a changed quarter are re-summed from
their parts. A bucket is written (with version + 1) only when its values change, so a replay or a
redelivery changes nothing and publishes nothing.

A whole consumer batch is recomputed together in four store round trips (the neighbours of the
new readings, a count of what is stored between them, the readings of the touched quarters, the
stored buckets around them), however many devices it holds: per-device queries would make the
store's latency the pipeline's limit. Readings the batch itself brought are not read back when
the count shows the store holds exactly them: reading them back was the largest cost of the
usage service.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from energy_tracker.core.energy import (
    COUNTER_SPREAD_MS,
    QUARTER_MS,
    period_end,
    period_start,
    quarter_buckets,
    rollup,
)
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore

Q, H, D, M = Granularity.QUARTER, Granularity.HOUR, Granularity.DAY, Granularity.MONTH
_BY_TS = attrgetter("ts")


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    """New readings of one device, with what its buckets need: its zone and its tariff."""

    readings: Sequence[Reading]
    tz: ZoneInfo
    tariff: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Affected:
    """The quarters [q_lo, q_hi) a device's new readings touch, and the wider spans of stored
    buckets needed to re-sum the hours, days and months holding them."""

    q_lo: int
    q_hi: int
    quarters: tuple[int, int]  # every quarter of the touched UTC hours and local days
    hours: tuple[int, int]
    months: tuple[int, int]  # the touched local months (for their days and themselves)


def _changes(new: Iterable[Bucket], old: dict[int, Bucket]) -> list[Bucket]:
    """The `new` buckets that differ from the `old` ones, versioned. `new` are freshly computed
    and nobody else holds them, so they take their version in place (a `replace` per bucket was
    a twentieth of the usage consumer's time with one-reading records)."""
    out = []
    for bucket in new:
        before = old.get(bucket.start)
        if before is None:
            if bucket.samples or bucket.energy_wh:
                bucket.version = 1
                out.append(bucket)
        elif not bucket.same_values(before):
            bucket.version = before.version + 1
            out.append(bucket)
    return out


def _sums(
    device_id: str,
    granularity: Granularity,
    starts: Iterable[int],
    parts: dict[int, Bucket],
    tz: ZoneInfo,
) -> list[Bucket]:
    """The buckets of `granularity` beginning at `starts`, each the sum of the `parts` (finer
    buckets by start) inside it."""
    keys = sorted(parts)
    out = []
    for start in sorted(set(starts)):
        lo = bisect_left(keys, start)
        hi = bisect_left(keys, period_end(start, granularity, tz), lo)
        out.append(rollup(device_id, granularity, start, (parts[k] for k in keys[lo:hi])))
    return out


def _affected(q_lo: int, q_hi: int, tz: ZoneInfo) -> _Affected:
    # Where the offset is not a whole number of hours (India, Nepal, Newfoundland) an hour
    # straddles two local days, so the quarters of the touched hours AND days are both needed.
    d_lo, d_hi = period_start(q_lo, D, tz), period_end(period_start(q_hi - 1, D, tz), D, tz)
    h_lo, h_hi = period_start(q_lo, H), period_end(period_start(q_hi - 1, H), H)
    m_lo = period_start(d_lo, M, tz)
    m_hi = period_end(period_start(d_hi - 1, M, tz), M, tz)
    return _Affected(q_lo, q_hi, (min(d_lo, h_lo), max(d_hi, h_hi)), (h_lo, h_hi), (m_lo, m_hi))


@dataclass(frozen=True, slots=True)
class _Plan:
    """What recomputing one device's buckets reads: the span of its new readings, the
    buckets they may change, and whether the store is known to hold exactly the new readings
    between the span's ends (then those are not read back)."""

    span: tuple[int, int]  # first and last new ts
    affected: _Affected
    held: bool = False


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What the store holds for one device's plan: the readings over its quarters and its
    stored buckets by granularity and start."""

    rows: list[Reading]
    stored: dict[Granularity, dict[int, Bucket]]


class Rollups:
    """Recomputes the buckets a batch of stored readings changes: plan, load, diff."""

    def __init__(self, series: SeriesStore, max_gap_ms: int) -> None:
        self.series = series
        self.max_gap_ms = max_gap_ms
        # How far before a reading the segment ending at it can put energy: the stored reading
        # before a batch may be a year older, but only this much of its segment needs redoing.
        self.reach_ms = max(max_gap_ms, COUNTER_SPREAD_MS)

    async def recompute(
        self, batch: dict[str, DeviceReadings], all_new: bool = False
    ) -> list[Bucket]:
        """Every bucket that these (already stored) readings changed, newly versioned.

        `all_new`: the store had none of these readings before (`add_readings` returned every
        one of them, and none was repeated in the batch), so it holds exactly these values.
        Then a device's readings are not read back: only the stored ones around them are, once
        a count shows that no other stored reading lies between its first and last new one.
        """
        if not batch:
            return []
        plans = await self._plan(batch)
        if all_new:
            plans = await self._mark_held(batch, plans)
        loaded = await self._load(batch, plans)
        return [
            bucket
            for device_id, plan in plans.items()
            for bucket in self._diff(device_id, batch[device_id], plan.affected, loaded[device_id])
        ]

    async def _plan(self, batch: dict[str, DeviceReadings]) -> dict[str, _Plan]:
        """Round trip 1: the stored neighbours of each device's new readings, which widen the
        quarters to recompute to those the neighbouring segments touch."""
        spans = {
            d: (min(r.ts for r in b.readings), max(r.ts for r in b.readings))
            for d, b in batch.items()
        }
        # Two empty windows at the span's ends return just the neighbours around it, without
        # reading back the batch itself.
        neighbours = await self.series.readings_around_many(
            [w for d, (lo, hi) in spans.items() for w in ((d, lo, lo), (d, hi + 1, hi + 1))]
        )
        plans = {}
        for device_id, (lo, hi) in spans.items():
            near = neighbours.get(device_id) or []
            before = max(near[0].ts, lo - self.reach_ms) if near else lo
            q_lo = period_start(min(lo, before), Q)
            q_hi = period_start(max(hi, near[-1].ts if near else hi), Q) + QUARTER_MS
            plans[device_id] = _Plan((lo, hi), _affected(q_lo, q_hi, batch[device_id].tz))
        return plans

    async def _mark_held(
        self, batch: dict[str, DeviceReadings], plans: dict[str, _Plan]
    ) -> dict[str, _Plan]:
        """Round trip 2 (only for a batch of all-new readings): the devices whose stored
        readings between the span's ends are exactly their new ones."""
        counts = await self.series.count_readings_many(
            [(d, p.span[0], p.span[1] + 1) for d, p in plans.items()]
        )
        return {d: replace(p, held=counts[d] == len(batch[d].readings)) for d, p in plans.items()}

    async def _load(
        self, batch: dict[str, DeviceReadings], plans: dict[str, _Plan]
    ) -> dict[str, _Loaded]:
        """Round trips 3 and 4: the readings over each plan's quarters (around the new ones
        where the store holds exactly them), and the stored buckets of its window."""
        rows = await self.series.readings_around_many(
            [
                window
                for d, p in plans.items()
                for window in (
                    ((d, p.affected.q_lo, p.span[0]), (d, p.span[1] + 1, p.affected.q_hi))
                    if p.held
                    else ((d, p.affected.q_lo, p.affected.q_hi),)
                )
            ]
        )
        for device_id, plan in plans.items():
            if plan.held:
                lo, hi = plan.span
                around = rows.get(device_id) or []
                rows[device_id] = (
                    [r for r in around if r.ts < lo]
                    + sorted(batch[device_id].readings, key=_BY_TS)
                    + [r for r in around if r.ts > hi]
                )
        stored = await self.series.buckets_many(
            [
                query
                for d, p in plans.items()
                for query in (
                    (d, Q, *p.affected.quarters),
                    (d, H, *p.affected.hours),
                    (d, D, *p.affected.months),
                    (d, M, *p.affected.months),
                )
            ]
        )
        by_key: dict[tuple[str, Granularity], dict[int, Bucket]] = defaultdict(dict)
        for bucket in stored:
            by_key[(bucket.device_id, bucket.granularity)][bucket.start] = bucket
        return {
            d: _Loaded(rows.get(d) or [], {g: by_key[(d, g)] for g in (Q, H, D, M)}) for d in plans
        }

    def _diff(
        self, device_id: str, new: DeviceReadings, affected: _Affected, loaded: _Loaded
    ) -> list[Bucket]:
        """No I/O: the device's quarters integrated afresh, and the hours, days and months
        holding a changed quarter re-summed; what differs from the stored buckets."""
        stored = loaded.stored
        fresh = quarter_buckets(
            device_id,
            loaded.rows,
            affected.q_lo,
            affected.q_hi,
            max_gap_ms=self.max_gap_ms,
            tz=new.tz,
            tariff=new.tariff,
        )
        quarters = stored[Q]
        # A stored quarter of the window that came back empty-handed is cleared.
        kept = {b.start for b in fresh}
        fresh += [
            Bucket(device_id, Q, start)
            for start in quarters
            if affected.q_lo <= start < affected.q_hi and start not in kept
        ]
        changed_quarters = _changes(fresh, quarters)
        if not changed_quarters:
            return []
        quarters = {**quarters, **{b.start: b for b in changed_quarters}}
        hour_starts = {period_start(b.start, H) for b in changed_quarters}
        changed_hours = _changes(_sums(device_id, H, hour_starts, quarters, new.tz), stored[H])
        day_starts = {period_start(b.start, D, new.tz) for b in changed_quarters}
        changed_days = _changes(_sums(device_id, D, day_starts, quarters, new.tz), stored[D])
        days = {**stored[D], **{b.start: b for b in changed_days}}
        month_starts = {period_start(s, M, new.tz) for s in day_starts}
        changed_months = _changes(_sums(device_id, M, month_starts, days, new.tz), stored[M])
        return changed_quarters + changed_hours + changed_days + changed_months
