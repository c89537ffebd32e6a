"""Keeps a device's buckets equal to what its stored readings say, however late they arrive.

For the readings just stored, the quarters their segments touch are recomputed from the raw
series; the hours, local days and local months holding a changed quarter are re-summed from
their parts. A bucket is written (with version + 1) only when its values change, so a replay or a
redelivery changes nothing and publishes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from energy_tracker.core.energy import (
    QUARTER_MS,
    period_end,
    period_start,
    period_starts,
    quarter_buckets,
    rollup,
)
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore

Q, H, D, M = Granularity.QUARTER, Granularity.HOUR, Granularity.DAY, Granularity.MONTH


def _changes(new: Iterable[Bucket], old: dict[int, Bucket]) -> list[Bucket]:
    out = []
    for bucket in new:
        before = old.get(bucket.start)
        if before is None:
            if bucket.samples or bucket.energy_wh:
                out.append(replace(bucket, version=1))
        elif not bucket.same_values(before):
            out.append(replace(bucket, version=before.version + 1))
    return out


class Rollups:
    def __init__(self, series: SeriesStore, max_gap_ms: int) -> None:
        self.series = series
        self.max_gap_ms = max_gap_ms

    async def recompute(
        self,
        device_id: str,
        readings: Sequence[Reading],
        tz: ZoneInfo,
        tariff: dict[str, Any] | None,
    ) -> list[Bucket]:
        """Every bucket of the device that these (stored) readings changed, newly versioned."""
        lo = min(r.ts for r in readings)
        hi = max(r.ts for r in readings)
        neighbours = await self.series.readings_around(device_id, lo, hi + 1)
        q_lo = period_start(min(lo, neighbours[0].ts if neighbours else lo), Q)
        q_hi = period_start(max(hi, neighbours[-1].ts if neighbours else hi), Q) + QUARTER_MS
        rows = await self.series.readings_around(device_id, q_lo, q_hi)
        fresh_quarters = quarter_buckets(
            device_id, rows, q_lo, q_hi, max_gap_ms=self.max_gap_ms, tz=tz, tariff=tariff
        )

        # Quarters of every local day and every UTC hour touched: enough to re-sum those hours
        # and days. Both are needed: where the offset is not a whole number of hours (India,
        # Nepal, Newfoundland), an hour straddles two local days.
        d_lo, d_hi = period_start(q_lo, D, tz), period_end(period_start(q_hi - 1, D, tz), D, tz)
        h_lo, h_hi = period_start(q_lo, H), period_end(period_start(q_hi - 1, H), H)
        quarters = {
            b.start: b
            for b in await self.series.buckets([device_id], Q, min(d_lo, h_lo), max(d_hi, h_hi))
        }
        changed_quarters = _changes(fresh_quarters, quarters)
        if not changed_quarters:
            return []
        quarters.update((b.start, b) for b in changed_quarters)
        first, last = changed_quarters[0].start, changed_quarters[-1].start

        def sums(
            granularity: Granularity, starts: list[int], parts: dict[int, Bucket], zone: ZoneInfo
        ) -> list[Bucket]:
            return [
                rollup(
                    device_id,
                    granularity,
                    s,
                    (b for t, b in parts.items() if s <= t < period_end(s, granularity, zone)),
                )
                for s in starts
            ]

        hour_starts = sorted({period_start(b.start, H) for b in changed_quarters})
        old_hours = {
            b.start: b
            for b in await self.series.buckets([device_id], H, hour_starts[0], hour_starts[-1] + 1)
        }
        changed_hours = _changes(sums(H, hour_starts, quarters, tz), old_hours)

        day_starts = period_starts(first, last + QUARTER_MS, D, tz)
        old_days = {b.start: b for b in await self.series.buckets([device_id], D, d_lo, d_hi)}
        fresh_days = sums(D, day_starts, quarters, tz)
        changed_days = _changes(fresh_days, old_days)

        m_lo = period_start(day_starts[0], M, tz)
        m_hi = period_end(period_start(day_starts[-1], M, tz), M, tz)
        days = {b.start: b for b in await self.series.buckets([device_id], D, m_lo, m_hi)}
        days.update((b.start, b) for b in changed_days)
        month_starts = period_starts(m_lo, m_hi, M, tz)
        old_months = {b.start: b for b in await self.series.buckets([device_id], M, m_lo, m_hi)}
        changed_months = _changes(sums(M, month_starts, days, tz), old_months)
        return changed_quarters + changed_hours + changed_days + changed_months
