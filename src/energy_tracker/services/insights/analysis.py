"""What a home's usage history says: baseload, month totals, forecasts, anomalies and the biggest
devices. Pure functions over days and hours of energy and cost; no I/O, so each is unit-tested
with numbers worked out by hand.

Household usage is heavy-tailed (an oven, a car charging, a week away), so anomalies are judged
with medians and median absolute deviations (MADs): one extreme day neither hides the next one nor
makes the ordinary ones look odd, as it would through a mean and a standard deviation.
"""

from __future__ import annotations

import calendar
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from statistics import fmean, median, stdev
from typing import Literal

BASELOAD_PERCENTILE = 10.0
# A year of an always-on load: 365 days of 24 hours.
HOURS_PER_YEAR = 8760
# Forecasts and the baseload read this many full days before today.
RECENT_DAYS = 14
# Same-weekday forecasts and anomaly baselines look back four weeks.
HISTORY_DAYS = 28
FORECAST_HORIZON_DAYS = 7
TOP_DEVICES = 5
# A MAD times this estimates the standard deviation of normally distributed values.
MAD_TO_SIGMA = 1.4826
# Fewer earlier values than this make no baseline: nothing is judged against them.
MIN_BASELINE = 7
DAY_THRESHOLD = 3.0
# About 24 times as many hours as days are judged, so an hour must stand out further to count.
HOUR_THRESHOLD = 5.0
# A perfectly regular history has a MAD of 0, which would make any change, however small, an
# anomaly: the scale is at least 5% of the usual value, and at least an absolute amount.
RELATIVE_FLOOR = 0.05
DAY_FLOOR_KWH = 0.1
HOUR_FLOOR_KWH = 0.05

Basis = Literal["weekday", "overall"]
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
class MonthForecast:
    """The current month's expected total, with a range from how much the recent days varied."""

    period_start: date
    energy_kwh: float
    energy_kwh_low: float
    energy_kwh_high: float
    cost: float
    cost_low: float
    cost_high: float
    month_to_date_kwh: float
    month_to_date_cost: float
    remaining_days: float
    basis_days: int


@dataclass(frozen=True, slots=True)
class DayForecast:
    day: date
    energy_kwh: float
    cost: float
    basis: Basis  # the same weekday of recent weeks, or every recent day when there was none


@dataclass(frozen=True, slots=True)
class DayAnomaly:
    day: date
    energy_kwh: float
    expected_kwh: float
    score: float  # (value - median) / scaled MAD: like a z-score, robust to outliers
    direction: Direction


@dataclass(frozen=True, slots=True)
class HourAnomaly:
    start: datetime
    energy_kwh: float
    expected_kwh: float
    score: float


@dataclass(frozen=True, slots=True)
class DeviceTotal:
    device_id: str
    name: str
    energy_kwh: float
    cost: float


@dataclass(frozen=True, slots=True)
class DeviceShare:
    device_id: str
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


def remaining_days(now: datetime) -> float:
    """Days left in the month of `now` (aware): what is left of today, as a share of today's real
    length (23 or 25 hours on a DST day), plus the whole days after it."""
    if now.tzinfo is None:
        raise ValueError("now must be aware: a day's length depends on its zone")
    today = now.date()
    start = local_midnight(today, now.tzinfo).timestamp()
    end = local_midnight(today + timedelta(days=1), now.tzinfo).timestamp()
    days_in_month = calendar.monthrange(today.year, today.month)[1]
    return (end - now.timestamp()) / (end - start) + (days_in_month - today.day)


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


def _projection(so_far: float, daily: Sequence[float], left: float) -> tuple[float, float, float]:
    """(expected, low, high) of `so_far` plus `left` more days like `daily`."""
    mean = fmean(daily)
    spread = stdev(daily) if len(daily) > 1 else 0.0
    # Days vary independently around their mean, so the spread of a sum of n days grows as √n.
    margin = spread * math.sqrt(left)
    rest = mean * left
    low = rest - margin
    if min(daily) >= 0:  # a home that only drew energy will not give it back
        low = max(low, 0.0)
    return so_far + rest, so_far + low, so_far + rest + margin


def month_forecast(days: Sequence[Day], now: datetime) -> MonthForecast | None:
    """This month's total: so far, plus the mean of the last 14 full days for each day left
    (today's unused part included), give or take their standard deviation times √(days left).
    None without any recent full day."""
    today = now.date()
    recent = _between(days, today - timedelta(days=RECENT_DAYS), today)
    if not recent:
        return None
    this = _between(days, month_start(today), today + timedelta(days=1))
    kwh_so_far = sum(d.energy_kwh for d in this)
    cost_so_far = sum(d.cost for d in this)
    left = remaining_days(now)
    kwh = _projection(kwh_so_far, [d.energy_kwh for d in recent], left)
    cost = _projection(cost_so_far, [d.cost for d in recent], left)
    return MonthForecast(
        period_start=month_start(today),
        energy_kwh=kwh[0],
        energy_kwh_low=kwh[1],
        energy_kwh_high=kwh[2],
        cost=cost[0],
        cost_low=cost[1],
        cost_high=cost[2],
        month_to_date_kwh=kwh_so_far,
        month_to_date_cost=cost_so_far,
        remaining_days=left,
        basis_days=len(recent),
    )


def daily_forecast(
    days: Sequence[Day], today: date, horizon: int = FORECAST_HORIZON_DAYS
) -> list[DayForecast]:
    """Each of the `horizon` days after today: the mean of the same weekday over the last four
    weeks (homes keep weekly rhythms), or of all those days when that weekday has no data."""
    history = _between(days, today - timedelta(days=HISTORY_DAYS), today)
    if not history:
        return []
    out = []
    for offset in range(1, horizon + 1):
        day = today + timedelta(days=offset)
        same = [d for d in history if d.day.weekday() == day.weekday()]
        basis = same or history
        out.append(
            DayForecast(
                day,
                fmean(d.energy_kwh for d in basis),
                fmean(d.cost for d in basis),
                "weekday" if same else "overall",
            )
        )
    return out


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


def hour_anomalies(hours: Sequence[Hour], since: datetime, now: datetime) -> list[HourAnomaly]:
    """Whole hours from `since` to `now` more than HOUR_THRESHOLD scaled MADs above the median
    of the same hour of the day over the 28 days before, oldest first. Only highs: a quiet hour
    is rarely news, a kettle left on is."""
    window_s = HISTORY_DAYS * 86_400
    by_hour: dict[int, list[Hour]] = defaultdict(list)
    ordered = sorted(hours, key=lambda h: h.start.timestamp())
    for h in ordered:
        by_hour[h.start.hour].append(h)
    out = []
    for h in ordered:
        t = h.start.timestamp()
        if t < since.timestamp() or t + 3600 > now.timestamp():
            continue
        earlier = [
            e.energy_kwh for e in by_hour[h.start.hour] if t - window_s <= e.start.timestamp() < t
        ]
        if len(earlier) < MIN_BASELINE:
            continue
        expected, scale = robust_baseline(earlier, HOUR_FLOOR_KWH)
        score = (h.energy_kwh - expected) / scale
        if score > HOUR_THRESHOLD:
            out.append(HourAnomaly(h.start, h.energy_kwh, expected, score))
    return out


def top_devices(totals: Sequence[DeviceTotal], limit: int = TOP_DEVICES) -> list[DeviceShare]:
    """The devices that used the most energy, biggest first, with their share of what all the
    devices that used energy used (a solar inverter's export is not a share of use)."""
    using = [t for t in totals if t.energy_kwh > 0]
    used = sum(t.energy_kwh for t in using)
    ranked = sorted(using, key=lambda t: (-t.energy_kwh, t.device_id))[:limit]
    return [
        DeviceShare(t.device_id, t.name, t.energy_kwh, t.cost, t.energy_kwh / used * 100.0)
        for t in ranked
    ]
