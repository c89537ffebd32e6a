"""The energy math: readings to energy, energy to buckets, buckets to cost. Pure; no I/O.

Rules (shared/DESIGN.md):
- Two consecutive counter values give the energy between them; a counter that went down was reset
  and its new value counts from zero.
- Power alone is integrated with the trapezoid rule, never across a gap longer than `max_gap`.
- A counter's energy over a gap of more than a day (a meter offline for days) is real but its
  timing is not known: it is spread over the last day before the reading that closes the gap
  (`COUNTER_SPREAD_MS`). The total stays right, and the buckets one reading can touch stay
  bounded (96 quarters), however long the gap.
- Energy of a segment spanning bucket edges is split in proportion to time.
- 15-minute and hour buckets are UTC; day and month buckets follow the device's time zone.
  Every real time zone's offset is a multiple of 15 minutes, so a local day or month is always a
  whole number of UTC quarters: quarters are the unit, and every coarser bucket is a sum of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity

QUARTER_MS = 15 * 60 * 1000
HOUR_MS = 60 * 60 * 1000
MS_PER_HOUR = 3_600_000.0
COUNTER_SPREAD_MS = 24 * HOUR_MS
"""The longest span a counter segment's energy is spread over, ending where its gap closes."""
UTC = ZoneInfo("UTC")


# -- periods -----------------------------------------------------------------------------------


@lru_cache(maxsize=16384)
def _local_midnight(day: date, tz: ZoneInfo) -> int:
    """Cached: the consumers ask for the same few days and months of the same zones thousands of
    times a second (a zone-aware datetime costs microseconds), and the answer never changes."""
    # fold=0 on a nonexistent local midnight yields the instant the clocks jumped: the day's start.
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def period_start(ts: int, granularity: Granularity, tz: ZoneInfo = UTC) -> int:
    """Epoch ms at which the bucket holding `ts` begins."""
    if granularity is Granularity.QUARTER:
        return ts - ts % QUARTER_MS
    if granularity is Granularity.HOUR:
        return ts - ts % HOUR_MS
    local = datetime.fromtimestamp(ts / 1000, tz)
    if granularity is Granularity.DAY:
        return _local_midnight(local.date(), tz)
    return _local_midnight(local.date().replace(day=1), tz)


@lru_cache(maxsize=16384)
def period_end(start: int, granularity: Granularity, tz: ZoneInfo = UTC) -> int:
    """Epoch ms at which the bucket beginning at `start` ends (23 or 25 hours on DST days).
    Cached like `_local_midnight`: few distinct starts, asked for again and again."""
    if granularity is Granularity.QUARTER:
        return start + QUARTER_MS
    if granularity is Granularity.HOUR:
        return start + HOUR_MS
    local = datetime.fromtimestamp(start / 1000, tz).date()
    if granularity is Granularity.DAY:
        return _local_midnight(local + timedelta(days=1), tz)
    nxt = date(local.year + (local.month == 12), local.month % 12 + 1, 1)
    return _local_midnight(nxt, tz)


def period_starts(start: int, end: int, granularity: Granularity, tz: ZoneInfo = UTC) -> list[int]:
    """Starts of every bucket overlapping [start, end)."""
    out = []
    cursor = period_start(start, granularity, tz)
    while cursor < end:
        out.append(cursor)
        cursor = period_end(cursor, granularity, tz)
    return out


# -- tariffs -----------------------------------------------------------------------------------


def prices_at(tariff: dict[str, Any] | None, local_hour: int) -> tuple[float, float]:
    """(import, export) price per kWh at this local hour; (0, 0) without a tariff."""
    if not tariff:
        return 0.0, 0.0
    export = float(tariff.get("export_price_per_kwh") or 0.0)
    if tariff.get("type") == "tou":
        for band in tariff.get("bands", ()):
            lo, hi = band["from_hour"], band["to_hour"]
            inside = lo <= local_hour < hi if lo < hi else (local_hour >= lo or local_hour < hi)
            if inside:
                return float(band["price_per_kwh"]), export
        return 0.0, export
    return float(tariff.get("price_per_kwh") or 0.0), export


def quarter_cost(
    energy_wh: float, quarter: int, tz: ZoneInfo, tariff: dict[str, Any] | None
) -> float:
    """Cost of a quarter's net energy: imports at the import price, exports at the export price.

    A quarter lies inside one local hour (offsets are multiples of 15 minutes), so one price holds.
    """
    if not tariff or energy_wh == 0:
        return 0.0
    buy, sell = prices_at(tariff, datetime.fromtimestamp(quarter / 1000, tz).hour)
    return energy_wh / 1000.0 * (buy if energy_wh > 0 else sell)


# -- integration -------------------------------------------------------------------------------


def quarter_buckets(
    device_id: str,
    readings: Sequence[Reading],
    start: int,
    end: int,
    *,
    max_gap_ms: int,
    tz: ZoneInfo = UTC,
    tariff: dict[str, Any] | None = None,
) -> list[Bucket]:
    """The quarter buckets in [start, end) (both quarter-aligned) that hold a sample or energy,
    computed from `readings`, in time order.

    `readings` are the device's readings in time order, covering [start, end) plus the last one
    before `start` and the first one after: exactly what `SeriesStore.readings_around` returns.
    Quarters with nothing in them are left out (a span can be a year of them); a recomputation
    clears the stored quarters it did not get back.

    This runs for every reading the platform stores, so it is one pass over plain lists (each
    reading counted as a sample, and the segment ending at it integrated), and the buckets are
    built once at the end.
    """
    n = (end - start) // QUARTER_MS
    energy = [0.0] * n
    samples = [0] * n
    power_samples = [0] * n
    power_sum = [0.0] * n
    lowest: list[float | None] = [None] * n
    highest: list[float | None] = [None] * n
    previous: Reading | None = None
    for r in readings:
        ts, power = r.ts, r.power_w
        if start <= ts < end:
            i = (ts - start) // QUARTER_MS
            samples[i] += 1
            if power is not None:
                power_samples[i] += 1
                power_sum[i] += power
                low, high = lowest[i], highest[i]
                if low is None or power < low:
                    lowest[i] = power
                if high is None or power > high:
                    highest[i] = power
        a, previous = previous, r
        if a is None or ts <= a.ts:
            continue
        # The segment's energy: two counter values give it (a counter that went down was reset,
        # and its new value counts from zero), spread over at most COUNTER_SPREAD_MS before
        # `ts`; else power by the trapezoid rule, never across a gap longer than max_gap_ms;
        # else it is unknown. Inline, as a function call was a good part of the cost of a
        # reading here.
        begin = a.ts
        if a.energy_wh is not None and r.energy_wh is not None:
            delta = r.energy_wh - a.energy_wh
            segment = r.energy_wh if delta < 0 else delta
            if ts - begin > COUNTER_SPREAD_MS:
                begin = ts - COUNTER_SPREAD_MS
        elif a.power_w is not None and power is not None and ts - begin <= max_gap_ms:
            segment = (a.power_w + power) / 2.0 * (ts - begin) / MS_PER_HOUR
        else:
            continue
        lo = begin if begin > start else start
        hi = ts if ts < end else end
        if hi <= lo:
            continue
        per_ms = segment / (ts - begin)
        i = (lo - start) // QUARTER_MS
        q = start + i * QUARTER_MS
        while q < hi:
            q_end = q + QUARTER_MS
            energy[i] += per_ms * ((hi if hi < q_end else q_end) - (lo if lo > q else q))
            i, q = i + 1, q_end
    return [
        Bucket(
            device_id,
            Granularity.QUARTER,
            q,
            energy[i],
            quarter_cost(energy[i], q, tz, tariff),
            samples[i],
            power_samples[i],
            power_sum[i],
            lowest[i],
            highest[i],
        )
        for i, q in enumerate(range(start, end, QUARTER_MS))
        if samples[i] or energy[i]
    ]


def rollup(device_id: str, granularity: Granularity, start: int, parts: Iterable[Bucket]) -> Bucket:
    """A coarser bucket as the sum of the finer buckets inside it."""
    total = Bucket(device_id, granularity, start)
    for p in parts:
        total.energy_wh += p.energy_wh
        total.cost += p.cost
        total.samples += p.samples
        total.power_samples += p.power_samples
        total.power_sum_w += p.power_sum_w
        if p.min_power_w is not None:
            total.min_power_w = (
                p.min_power_w
                if total.min_power_w is None
                else min(total.min_power_w, p.min_power_w)
            )
        if p.max_power_w is not None:
            total.max_power_w = (
                p.max_power_w
                if total.max_power_w is None
                else max(total.max_power_w, p.max_power_w)
            )
    return total
