"""Hourly series and their local calendar: what the insights' forecasts and the anomaly
detector (and through it the alerts) all read. A series is indexed by whole UTC hours from
`start` (epoch seconds); NaN is an hour without data. A `Calendar` gives each hour its local
hour of the day, its local date and whether that date is a day off (a weekend day or a public
holiday of the household's country, from the `holidays` package).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

import holidays
import numpy as np
from numpy.typing import NDArray

from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore

HOUR_S = 3600
QUARTER_S = 900

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Calendar:
    """Local facts of each hour of a series (and of the hours forecast after it)."""

    hour: NDArray[np.int16]  # local hour of the day, 0-23
    day: Ints  # local date as a day ordinal (date.toordinal())
    off: Bools  # bool: the local date is a weekend day or a public holiday

    def slice(self, lo: int, end: int | None = None) -> Calendar:
        """The calendar of hours lo..end-1 (of a series cut the same way)."""
        return Calendar(self.hour[lo:end], self.day[lo:end], self.off[lo:end])


def calendar_of(start: int, n: int, tz: tzinfo, country: str | None) -> Calendar:
    """The calendar of `n` hours from `start` (epoch s, a whole UTC hour) in zone `tz`;
    holidays of `country` (ISO 3166 alpha-2) when known, else weekends only."""
    hours = np.empty(n, dtype=np.int16)
    days = np.empty(n, dtype=np.int64)
    for i in range(n):
        local = datetime.fromtimestamp(start + i * HOUR_S, tz)
        hours[i] = local.hour
        days[i] = local.toordinal()
    off_days: set[int] = set()
    if n:
        first, last = date.fromordinal(int(days[0])), date.fromordinal(int(days[-1]))
        off_days = {
            d.toordinal()
            for d in holiday_dates(country, range(first.year, last.year + 1))
            if first <= d <= last
        }
        weekday = (days - 1) % 7  # date.fromordinal(1) is a Monday: 0
        off = (weekday >= 5) | np.isin(days, list(off_days))
    else:
        off = np.zeros(0, dtype=bool)
    return Calendar(hours, days, off)


def holiday_dates(country: str | None, years: range) -> list[date]:
    """Public holidays of `country` in `years`; none for an unknown or missing country."""
    if not country:
        return []
    try:
        return list(holidays.country_holidays(country, years=years).keys())
    except NotImplementedError:
        return []


@dataclass(frozen=True, slots=True)
class DaySeries:
    """Local days' kWh (NaN: not enough hours recorded) with their day-off flags."""

    first: int  # ordinal of the first day
    kwh: Floats
    off: Bools


# A day with fewer recorded hours than this is unknown; one with at least this many counts,
# its missing hours filled at the day's own mean rate.
MIN_DAY_HOURS = 20


def days_of(kwh: Floats, cal: Calendar) -> DaySeries:
    """Sum the hours into local days (a DST day has 23 or 25 hours)."""
    if kwh.size == 0:
        return DaySeries(0, np.zeros(0), np.zeros(0, dtype=bool))
    first = int(cal.day[0])
    index = cal.day - first
    n = int(index[-1]) + 1
    seen = ~np.isnan(kwh)
    total = np.bincount(index[seen], weights=kwh[seen], minlength=n)
    count = np.bincount(index[seen], minlength=n)
    length = np.bincount(index, minlength=n)
    off = np.zeros(n, dtype=bool)
    off[index] = cal.off
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = np.where(count >= MIN_DAY_HOURS, total * length / count, np.nan)
    return DaySeries(first, filled, off)


def has_data(bucket: Bucket) -> bool:
    """Whether a bucket tells how much was used. One without energy counts only when idle: with
    samples of no power (or counters that did not move). Not when emptied by a recomputation (it
    stays stored with zeros), nor when it holds only the closing sample of a run, whose energy
    lies before it: either would read as a period of 0 W never seen."""
    if bucket.energy_wh != 0:
        return True
    return bucket.samples > 0 and not bucket.max_power_w and not bucket.min_power_w


async def hour_series(
    store: SeriesStore, weights: Mapping[str, float], start: int, end: int
) -> tuple[Floats, Floats]:
    """kWh and cost of the whole hours start..end (epoch s, whole UTC hours): each device's
    hours where they have data (`has_data`) times its weight, added up (a household's weights,
    `consumption.Layout.weights`, count each kWh once); NaN for an hour none of them has data
    for."""
    return await _series(store, weights, start, end, Granularity.HOUR, HOUR_S)


async def quarter_series(
    store: SeriesStore, weights: Mapping[str, float], start: int, end: int
) -> Floats:
    """kWh of the quarter hours of the whole hours start..end, as `hour_series` (4 an hour):
    what the anomaly detector tells a short spike from a busy hour by."""
    kwh, _ = await _series(store, weights, start, end, Granularity.QUARTER, QUARTER_S)
    return kwh


async def _series(
    store: SeriesStore,
    weights: Mapping[str, float],
    start: int,
    end: int,
    granularity: Granularity,
    step_s: int,
) -> tuple[Floats, Floats]:
    n = (end - start) // step_s
    kwh, cost = np.full(n, np.nan), np.full(n, np.nan)
    for device_id, weight in weights.items():
        for b in await store.buckets([device_id], granularity, start * 1000, end * 1000):
            if has_data(b):
                i = (b.start // 1000 - start) // step_s
                kwh[i] = np.nan_to_num(kwh[i]) + weight * b.energy_wh / 1000.0
                cost[i] = np.nan_to_num(cost[i]) + weight * b.cost
    return kwh, cost
