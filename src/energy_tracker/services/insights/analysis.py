"""What a home's usage history says: baseload, month totals, forecasts, anomalies and the biggest
devices. Pure functions over days and hours of energy and cost; no I/O, so each is unit-tested
with numbers worked out by hand.

Household usage is heavy-tailed (an oven, a car charging, a week away), so anomalies are judged
with medians and median absolute deviations (MADs): one extreme day neither hides the next one nor
makes the ordinary ones look odd, as it would through a mean and a standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from statistics import fmean, median
from typing import Literal

BASELOAD_PERCENTILE = 10.0
# A year of an always-on load: 365 days of 24 hours.
HOURS_PER_YEAR = 8760
# The baseload reads this many full days before today.
RECENT_DAYS = 14
# Anomaly baselines look back four weeks.
HISTORY_DAYS = 28
TOP_DEVICES = 5
# A MAD times this estimates the standard deviation of normally distributed values.
MAD_TO_SIGMA = 1.4826
# Fewer earlier values than this make no baseline: nothing is judged against them.
MIN_BASELINE = 7
DAY_THRESHOLD = 3.0
# A perfectly regular history has a MAD of 0, which would make any change, however small, an
# anomaly: the scale is at least 5% of the usual value, and at least an absolute amount.
RELATIVE_FLOOR = 0.05
DAY_FLOOR_KWH = 0.1

Direction = Literal["high", "low"]


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Day:
    """Usage of one local day."""

    day: date
    energy_kwh: float
    cost: float


@dataclass(frozen=True, slots=True)
class Hour:
    """Usage of one hour; `start` is aware, in the zone the hours of the day are counted in."""

    start: datetime
    energy_kwh: float
    cost: float


@dataclass(frozen=True, slots=True)
class Baseload:
    """The always-on power and what it adds up to over a year."""

    power_w: float
    yearly_kwh: float
    yearly_cost: float | None  # None when no hour had a price to go by
    share_pct: float | None  # of the energy used over the same hours; None when none was used
    hours: int  # hours it was judged from


@dataclass(frozen=True, slots=True)
class Total:
    """Energy and cost of the days of one period that have data."""

    period_start: date
    energy_kwh: float
    cost: float
    days: int


@dataclass(frozen=True, slots=True)
class MonthComparison:
    month_to_date: Total | None
    last_month: Total | None
    change_pct: float | None


@dataclass(frozen=True, slots=True)
class DayAnomaly:
    day: date
    energy_kwh: float
    expected_kwh: float
    score: float  # (value - median) / scaled MAD: like a z-score, robust to outliers
    direction: Direction


@dataclass(frozen=True, slots=True)
class DeviceTotal:
    device_id: str | None  # None: "other", what no device of its own explains
    name: str
    energy_kwh: float
    cost: float


@dataclass(frozen=True, slots=True)
class DeviceShare:
    device_id: str | None  # None: "other"
    name: str
    energy_kwh: float
    cost: float
    share_pct: float


# -- helpers -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile by linear interpolation between ranks (numpy's default), so that a
    hand calculation gives the same number."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The start of `day` in `tz` (on a day whose midnight is skipped, the instant of the jump)."""
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def month_start(day: date) -> date:
    return day.replace(day=1)


def previous_month_start(day: date) -> date:
    return month_start(month_start(day) - timedelta(days=1))


def robust_baseline(values: Sequence[float], floor: float) -> tuple[float, float]:
    """(median, scale) of earlier values: the scale is the MAD scaled to a standard deviation,
    but never below RELATIVE_FLOOR of the median nor below `floor`."""
    middle = median(values)
    mad = median(abs(v - middle) for v in values)
    return middle, max(MAD_TO_SIGMA * mad, RELATIVE_FLOOR * abs(middle), floor)


def _between(days: Sequence[Day], first: date, end: date) -> list[Day]:
    """The days with first <= day < end."""
    return [d for d in days if first <= d.day < end]


def _total(days: Sequence[Day], start: date) -> Total | None:
    if not days:
        return None
    return Total(start, sum(d.energy_kwh for d in days), sum(d.cost for d in days), len(days))


# -- insights ----------------------------------------------------------------------------------


def baseload(hours: Sequence[Hour]) -> Baseload | None:
    """The always-on power: the 10th percentile of the hours' average power (an hour's kWh is
    its average kW), a level the home seldom goes below, yet above the odd hour of an outage.

    Its yearly cost uses the plain mean of the hours' prices (cost / kWh), not the usage-weighted
    one: an always-on load draws as much at night as at the evening peak.
    """
    if not hours:
        return None
    power_w = percentile([h.energy_kwh * 1000.0 for h in hours], BASELOAD_PERCENTILE)
    yearly_kwh = power_w * HOURS_PER_YEAR / 1000.0
    prices = [h.cost / h.energy_kwh for h in hours if h.energy_kwh > 0]
    used = sum(h.energy_kwh for h in hours)
    return Baseload(
        power_w=power_w,
        yearly_kwh=yearly_kwh,
        yearly_cost=yearly_kwh * fmean(prices) if prices else None,
        share_pct=power_w / 1000.0 * len(hours) / used * 100.0 if used > 0 else None,
        hours=len(hours),
    )


def month_comparison(days: Sequence[Day], today: date) -> MonthComparison:
    """This month so far (today included) and the whole of last month; the change compares like
    with like: this month's full days (before today) with the same days of last month, counting
    only day numbers both months have data for."""
    this_start, last_start = month_start(today), previous_month_start(today)
    this = _between(days, this_start, today + timedelta(days=1))
    last = _between(days, last_start, this_start)
    this_full = {d.day.day: d.energy_kwh for d in this if d.day < today}
    last_same = {d.day.day: d.energy_kwh for d in last if d.day.day in this_full}
    before = sum(last_same.values())
    now = sum(this_full[n] for n in last_same)
    return MonthComparison(
        month_to_date=_total(this, this_start),
        last_month=_total(last, last_start),
        change_pct=(now - before) / abs(before) * 100.0 if before else None,
    )


def day_anomalies(days: Sequence[Day], since: date, today: date) -> list[DayAnomaly]:
    """Full days from `since` (today is not over, so not judged) more than DAY_THRESHOLD scaled
    MADs above or below the median of the 28 days before each, oldest first."""
    ordered = sorted(days, key=lambda d: d.day)
    out = []
    for d in _between(ordered, since, today):
        earlier = _between(ordered, d.day - timedelta(days=HISTORY_DAYS), d.day)
        if len(earlier) < MIN_BASELINE:
            continue
        expected, scale = robust_baseline([e.energy_kwh for e in earlier], DAY_FLOOR_KWH)
        score = (d.energy_kwh - expected) / scale
        if abs(score) > DAY_THRESHOLD:
            direction: Direction = "high" if score > 0 else "low"
            out.append(DayAnomaly(d.day, d.energy_kwh, expected, score, direction))
    return out


def top_devices(totals: Sequence[DeviceTotal], limit: int = TOP_DEVICES) -> list[DeviceShare]:
    """The devices that used the most energy, biggest first, with their share of what all the
    devices that used energy used (a solar inverter's export is not a share of use)."""
    using = [t for t in totals if t.energy_kwh > 0]
    used = sum(t.energy_kwh for t in using)
    ranked = sorted(using, key=lambda t: (-t.energy_kwh, t.device_id or ""))[:limit]
    return [
        DeviceShare(t.device_id, t.name, t.energy_kwh, t.cost, t.energy_kwh / used * 100.0)
        for t in ranked
    ]
