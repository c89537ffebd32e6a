"""The three insight reports: read the buckets each needs from the time-series store, then hand
them to the pure functions of `analysis`. One device, or a user's home period by period, each kWh
once (core.consumption), as `GET /usage` counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from energy_tracker.core import anomalies as detection
from energy_tracker.core import bucket_queries as queries
from energy_tracker.core import hours as hourly
from energy_tracker.core.consumption import HouseholdBucket, Layout, Placement, Role
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore
from energy_tracker.services.insights import analysis, recommendations
from energy_tracker.services.insights import forecasting as fc
from energy_tracker.services.insights.analysis import (
    HISTORY_DAYS,
    RECENT_DAYS,
    Baseload,
    Day,
    DayAnomaly,
    DeviceShare,
    DeviceTotal,
    Hour,
    Total,
)
from energy_tracker.services.insights.narrative import Narrator
from energy_tracker.services.insights.recommendations import Recommendation
from energy_tracker.services.insights.store import HourCache

# The most households one request reports on (each costs a report's reads: the forecast's and
# the anomalies' months of hours); the rest are counted, to be asked for one by one.
MAX_HOUSEHOLDS = 10


@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: str
    name: str
    timezone: str  # the device's own zone, else its owner's: where its day buckets are kept


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose usage a report reads, and from where: the zone its days are counted in, and the
    instant it is made as of (aware, in that zone)."""

    device_id: str | None  # None: every device of the household in `devices`
    devices: Sequence[DeviceRef]
    tz: ZoneInfo
    currency: str
    now: datetime
    country: str | None = None  # ISO 3166 alpha-2, for public holidays; None: weekends only
    layout: Layout | None = None  # how `devices` add up; None: each a top-level load
    household_id: str | None = None
    tariff: dict[str, Any] | None = None  # the household's: prices what an unmetered home
    price_zone: ZoneInfo | None = None  # exchanged, at the hours of this zone (default tz)

    @property
    def home(self) -> Layout:
        """How the devices add up (a single device, or devices without roles: summed)."""
        if self.layout is not None:
            return self.layout
        return Layout.of(Placement(d.id, Role.CONSUMER) for d in self.devices)


@dataclass(frozen=True, slots=True)
class Report:
    device_id: str | None
    household_id: str | None
    timezone: str
    currency: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Summary(Report):
    baseload: Baseload | None
    month_to_date: Total | None
    last_month: Total | None
    change_pct: float | None
    top_devices: list[DeviceShare]
    recommendations: list[Recommendation]
    narrative: str | None = None


@dataclass(frozen=True, slots=True)
class MonthForecast:
    """The current month's expected total with an 80 % range; cost at the recent mean price."""

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
    method: fc.Method


@dataclass(frozen=True, slots=True)
class DayForecast:
    day: date
    energy_kwh: float
    low: float
    high: float
    cost: float


@dataclass(frozen=True, slots=True)
class HourForecast:
    period_start: datetime
    energy_kwh: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Forecast(Report):
    method: fc.Method
    estimators: dict[str, dict[str, float]]
    month: MonthForecast | None
    days: list[DayForecast]
    hours: list[HourForecast]


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """A `detection.Event` in the subject's zone."""

    kind: detection.Kind
    start: datetime
    end: datetime
    hours: int
    energy_kwh: float
    expected_kwh: float
    score: float


@dataclass(frozen=True, slots=True)
class Anomalies(Report):
    since: date
    days: list[DayAnomaly]
    events: list[AnomalyEvent]


def _report(subject: Subject) -> dict[str, Any]:
    """The fields every report starts with: whose, in which zone and currency, as of when."""
    return {
        "device_id": subject.device_id,
        "household_id": subject.household_id,
        "timezone": subject.tz.key,
        "currency": subject.currency,
        "at": subject.now,
    }


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _days_of(buckets: Iterable[Bucket], tz: ZoneInfo) -> list[Day]:
    return [
        Day(datetime.fromtimestamp(b.start / 1000, tz).date(), b.energy_wh / 1000.0, b.cost)
        for b in buckets
        if hourly.has_data(b)
    ]


async def _day_buckets(
    store: SeriesStore, subject: Subject, first: date
) -> dict[str, list[Bucket]]:
    """Each device's day buckets in the subject's zone from `first` to now (today included)."""
    lo = _ms(analysis.local_midnight(first, subject.tz))
    hi = _ms(subject.now)
    return {
        d.id: await queries.device_buckets(
            store, d.id, d.timezone, Granularity.DAY, lo, hi, subject.tz
        )
        for d in subject.devices
    }


async def _summed_days(
    store: SeriesStore, subject: Subject, per_device: dict[str, list[Bucket]]
) -> list[Day]:
    """The home's days: what it consumed each day, each kWh once, priced as `GET /usage`
    prices them."""
    home = queries.combined(subject.home, Granularity.DAY, chain(*per_device.values()))
    await _priced(store, subject, home, Granularity.DAY)
    return _days_of((p.bucket for p in home), subject.tz)


async def _hours(store: SeriesStore, subject: Subject, lo: int, hi: int) -> list[Hour]:
    """The home's hours, each kWh once, with lo <= start < hi (hour buckets are UTC: no zone
    to mind), priced as `GET /usage` prices them."""
    summed = list(subject.home.weights())
    if not summed:
        return []
    buckets = await store.buckets(summed, Granularity.HOUR, lo, hi)
    home = queries.combined(subject.home, Granularity.HOUR, buckets)
    await _priced(store, subject, home, Granularity.HOUR)
    return [
        Hour(datetime.fromtimestamp(b.start / 1000, subject.tz), b.energy_wh / 1000.0, b.cost)
        for b in (p.bucket for p in home)
        if hourly.has_data(b)
    ]


async def _priced(
    store: SeriesStore, subject: Subject, periods: list[HouseholdBucket], granularity: Granularity
) -> None:
    """A home without a meter but with solar or a battery: each period's cost is what it
    exchanged, priced quarter by quarter (core.bucket_queries.price_exchange)."""
    zones = {d.id: d.timezone for d in subject.devices}
    await queries.price_exchange(
        store,
        subject.home,
        zones,
        periods,
        granularity,
        subject.tz,
        subject.tariff,
        subject.price_zone,
    )


# Recommendations compare the recent days with this many days before them.
EARLIER_DAYS = 28
# The always-on level of this many recent days is compared with the EARLIER_DAYS before them.
ALWAYS_ON_DAYS = 7


async def summary(
    store: SeriesStore, subject: Subject, narrator: Narrator | None = None
) -> Summary:
    """Baseload over the last 14 full days, this month against last, the biggest devices, what
    could be done about them (`recommendations`) and, with a `narrator`, a text of those facts."""
    today = subject.now.date()
    this_month = analysis.month_start(today)
    first = min(
        analysis.previous_month_start(today), today - timedelta(days=RECENT_DAYS + EARLIER_DAYS)
    )
    per_device = await _day_buckets(store, subject, first)
    all_hours = await _hours(
        store,
        subject,
        _ms(
            analysis.local_midnight(
                today - timedelta(days=ALWAYS_ON_DAYS + EARLIER_DAYS), subject.tz
            )
        ),
        _ms(analysis.local_midnight(today, subject.tz)),
    )
    recent = analysis.local_midnight(today - timedelta(days=RECENT_DAYS), subject.tz)
    hours = [h for h in all_hours if h.start >= recent]
    recent_at = analysis.local_midnight(today - timedelta(days=ALWAYS_ON_DAYS), subject.tz)
    recent_start = today - timedelta(days=RECENT_DAYS)
    earlier_start = recent_start - timedelta(days=EARLIER_DAYS)
    home_days = await _summed_days(store, subject, per_device)
    comparison = analysis.month_comparison(home_days, today)
    totals = []
    advice = [
        r
        for r in (
            recommendations.shift_load(hours),
            recommendations.always_on(
                [h for h in all_hours if h.start >= recent_at],
                [h for h in all_hours if h.start < recent_at],
            ),
        )
        if r
    ]
    home = subject.home
    for device in subject.devices:
        days = _days_of(per_device[device.id], subject.tz)
        month = [d for d in days if d.day >= this_month]
        if device.id in home.loads:
            totals.append(
                DeviceTotal(
                    device.id,
                    device.name,
                    sum(d.energy_kwh for d in month),
                    sum(d.cost for d in month),
                )
            )
        if device.id not in home.loads and device.id not in home.nested:
            continue  # a meter, solar, a battery: the home's terms, not one of its users
        full = [d for d in days if d.day < today]
        rise = recommendations.device_increase(
            device.id,
            [d for d in full if d.day >= recent_start],
            [d for d in full if earlier_start <= d.day < recent_start],
        )
        if rise and len(subject.devices) > 1:  # of a single device, the device is the home
            advice.append(rise)
    if home.metered:
        # What no top-level load explains is a share of the home's use too: "other".
        month = [d for d in home_days if d.day >= this_month]
        totals.append(
            DeviceTotal(
                None,
                "other",
                sum(d.energy_kwh for d in month) - sum(t.energy_kwh for t in totals),
                sum(d.cost for d in month) - sum(t.cost for t in totals),
            )
        )
    result = Summary(
        **_report(subject),
        baseload=analysis.baseload(hours),
        month_to_date=comparison.month_to_date,
        last_month=comparison.last_month,
        change_pct=comparison.change_pct,
        top_devices=analysis.top_devices(totals),
        recommendations=sorted(advice, key=lambda r: -r.saving_per_month),
    )
    if narrator is None:
        return result
    whose = subject.device_id or ",".join(sorted(d.id for d in subject.devices))
    text = await narrator.narrate(whose, today, facts(result))
    return replace(result, narrative=text)


def facts(s: Summary) -> dict[str, float | str]:
    """What the narrative may say, rounded as a reader would read it: the only numbers it may
    contain."""
    out: dict[str, float | str] = {"currency": s.currency}
    if s.baseload:
        out["always_on_w"] = round(s.baseload.power_w)
        out["always_on_kwh_a_year"] = round(s.baseload.yearly_kwh)
        if s.baseload.yearly_cost is not None:
            out["always_on_cost_a_year"] = round(s.baseload.yearly_cost, 2)
    if s.month_to_date:
        out["month_to_date_kwh"] = round(s.month_to_date.energy_kwh, 1)
        out["month_to_date_cost"] = round(s.month_to_date.cost, 2)
    if s.last_month:
        out["last_month_kwh"] = round(s.last_month.energy_kwh, 1)
        out["last_month_cost"] = round(s.last_month.cost, 2)
    if s.change_pct is not None:
        out["change_against_last_month_pct"] = round(s.change_pct, 1)
    for i, d in enumerate(s.top_devices, 1):
        out[f"device_{i}_name"] = d.name
        out[f"device_{i}_share_pct"] = round(d.share_pct, 1)
    for i, r in enumerate(s.recommendations, 1):
        out[f"recommendation_{i}"] = r.kind
        out[f"recommendation_{i}_saving_a_month"] = round(r.saving_per_month, 2)
    return out


# The forecasts read this much hourly history: the days' blend and interval learn from the
# errors of eight weeks of forecasts, each from the six weeks before it, and the month starts up
# to 31 days back (the hours' need, four weeks of errors of estimators reading eight weeks back,
# is less).
FORECAST_HISTORY_DAYS = (
    2 * fc.INTERVAL_DAYS + max(fc.DAY_LEVEL_DAYS, fc.DAY_KIND_DAYS, 7 * fc.DAY_WEEKS) + 31
)
# The hours kept per device (`HourCache`): the longest any report reads, the anomalies' (90 days
# back and the 8 weeks before them), and a little more.
CACHED_HOURS = 150 * 24
FORECAST_HOURS = 48
FORECAST_DAYS = 7


async def _hour_series(
    store: SeriesStore, subject: Subject, start: int, end: int, cache: HourCache | None
) -> tuple[np.ndarray, np.ndarray]:
    """kWh and cost of the whole hours start..end (epoch s, whole UTC hours) as arrays, NaN
    for an hour without data: from the `cache` when the service keeps one and the devices
    simply add up (loads without a grid meter, production or battery: each device's hours
    summed is the home's), else the home's hours from the store, each kWh once."""
    layout = subject.home
    if cache is not None and not layout.metered and not layout.priced_per_quarter:
        return await cache.hours(list(layout.weights()), start, end)
    n = (end - start) // hourly.HOUR_S
    kwh, cost = np.full(n, np.nan), np.full(n, np.nan)
    for hour in await _hours(store, subject, start * 1000, end * 1000):
        i = (int(hour.start.timestamp()) - start) // hourly.HOUR_S
        kwh[i], cost[i] = hour.energy_kwh, hour.cost
    return kwh, cost


def _price(kwh: np.ndarray, cost: np.ndarray) -> float:
    """The mean price of the last four weeks' hours (cost / kWh), 0 when nothing was used."""
    recent = slice(max(0, kwh.size - fc.INTERVAL_DAYS * 24), kwh.size)
    used = np.nansum(kwh[recent])
    return float(np.nansum(cost[recent]) / used) if used > 0 else 0.0


async def forecast(
    store: SeriesStore, subject: Subject, cache: HourCache | None = None
) -> Forecast:
    """The next 48 whole hours, the next 7 local days and this month, each with an 80 % range,
    from whole hours before `at` only (an hour still running at `at` is neither history nor
    forecast): readings after `at` change nothing."""
    now_s = int(subject.now.timestamp())
    first_hour = now_s // hourly.HOUR_S * hourly.HOUR_S  # the hour holding `at`
    skip = 0 if first_hour == now_s else 1  # `at` inside an hour: forecast from the next
    start = first_hour - FORECAST_HISTORY_DAYS * 86_400
    n = (first_hour - start) // hourly.HOUR_S
    kwh, cost = await _hour_series(store, subject, start, first_hour, cache)
    # The calendar runs past the month's end and the 7th day: their days off are known.
    ahead = skip + FORECAST_HOURS + 33 * 24
    extended = np.concatenate([kwh, np.full(ahead, np.nan)])
    cal = hourly.calendar_of(start, extended.size, subject.tz, subject.country)
    hours = fc.forecast_hours(extended, cal, n, skip + FORECAST_HOURS)
    hour_list = [
        HourForecast(
            datetime.fromtimestamp(first_hour + (i + skip) * hourly.HOUR_S, subject.tz),
            float(hours.kwh[i + skip]),
            float(hours.low[i + skip]),
            float(hours.high[i + skip]),
        )
        for i in range(FORECAST_HOURS)
        if hours.method != "none"
    ]
    days = hourly.days_of(extended, cal)
    today = fc.local_day_index(days, subject.now)
    days.kwh[today:] = np.nan  # today is not over: the days forecast learn from days before it
    price = _price(kwh, cost)
    ahead_days = fc.forecast_days(days, today, FORECAST_DAYS + 1)
    day_list = [
        DayForecast(
            date.fromordinal(days.first + today + i),
            float(ahead_days.kwh[i]),
            float(ahead_days.low[i]),
            float(ahead_days.high[i]),
            float(ahead_days.kwh[i]) * price,
        )
        for i in range(1, FORECAST_DAYS + 1)
        if ahead_days.method != "none"
    ]
    return Forecast(
        **_report(subject),
        method=hours.method,
        estimators={"hours": hours.weights, "days": ahead_days.weights},
        month=_month(subject, kwh, cost, cal, days, today, price, ahead_days.method),
        days=day_list,
        hours=hour_list,
    )


def _month(
    subject: Subject,
    kwh: np.ndarray,
    cost: np.ndarray,
    cal: hourly.Calendar,
    days: hourly.DaySeries,
    today: int,
    price: float,
    method: fc.Method,
) -> MonthForecast | None:
    """This month's projection; None without any day before today to learn a level from."""
    if method == "none":
        return None
    month_first = days.first + fc.month_start_index(days, today)
    this_month = cal.day[: kwh.size] >= month_first
    so_far_kwh = float(np.nansum(kwh[this_month]))
    so_far_cost = float(np.nansum(cost[this_month]))
    midnight = analysis.local_midnight(subject.now.date(), subject.tz).timestamp()
    tomorrow = analysis.local_midnight(
        subject.now.date() + timedelta(days=1), subject.tz
    ).timestamp()
    today_left = (tomorrow - subject.now.timestamp()) / (tomorrow - midnight)
    p = fc.project_month(days, today, so_far_kwh, today_left=today_left)
    return MonthForecast(
        period_start=date.fromordinal(month_first),
        energy_kwh=p.kwh,
        energy_kwh_low=p.low,
        energy_kwh_high=p.high,
        cost=so_far_cost + (p.kwh - so_far_kwh) * price,
        cost_low=so_far_cost + (p.low - so_far_kwh) * price,
        cost_high=so_far_cost + (p.high - so_far_kwh) * price,
        month_to_date_kwh=so_far_kwh,
        month_to_date_cost=so_far_cost,
        remaining_days=p.remaining_days,
        method=method,
    )


async def anomalies(
    store: SeriesStore, subject: Subject, window_days: int, cache: HourCache | None = None
) -> Anomalies:
    """Odd days of the last `window_days` days, each against the 28 days before it, and the
    events (`detection`) among the whole hours since then, each judged from the hours before it:
    readings after `at` change nothing."""
    today = subject.now.date()
    since = today - timedelta(days=window_days)
    first = since - timedelta(days=HISTORY_DAYS)
    days = await _summed_days(store, subject, await _day_buckets(store, subject, first))
    now_s = int(subject.now.timestamp())
    end = now_s // hourly.HOUR_S * hourly.HOUR_S  # the hour holding `at` is not over
    since_s = int(analysis.local_midnight(since, subject.tz).timestamp())
    start = (since_s - detection.HISTORY_H * hourly.HOUR_S) // hourly.HOUR_S * hourly.HOUR_S
    kwh, _ = await _hour_series(store, subject, start, end, cache)
    quarters = await hourly.quarter_series(store, subject.home.weights(), start, end)
    cal = hourly.calendar_of(start, kwh.size, subject.tz, subject.country)
    judged = -(-(since_s - start) // hourly.HOUR_S)
    found = detection.detect(kwh, cal, judged, kwh.size, quarters)
    return Anomalies(
        **_report(subject),
        since=since,
        days=analysis.day_anomalies(days, since, today),
        events=[_event(e, start, subject.tz) for e in found],
    )


def _event(e: detection.Event, start: int, tz: ZoneInfo) -> AnomalyEvent:
    return AnomalyEvent(
        kind=e.kind,
        start=datetime.fromtimestamp(start + e.first * hourly.HOUR_S, tz),
        end=datetime.fromtimestamp(start + e.end * hourly.HOUR_S, tz),
        hours=e.end - e.first,
        energy_kwh=e.actual_kwh,
        expected_kwh=e.expected_kwh,
        score=e.score,
    )
