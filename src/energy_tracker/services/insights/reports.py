"""The three insight reports: read the buckets each needs from the time-series store, then hand
them to the pure functions of `analysis`. One device, or every device of a user summed period by
period, as `GET /usage` sums them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

from energy_tracker.core import bucket_queries as queries
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore
from energy_tracker.services.insights import analysis
from energy_tracker.services.insights.analysis import (
    HISTORY_DAYS,
    RECENT_DAYS,
    Baseload,
    Day,
    DayAnomaly,
    DayForecast,
    DeviceShare,
    DeviceTotal,
    Hour,
    HourAnomaly,
    MonthForecast,
    Total,
)


@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: str
    name: str
    timezone: str  # the device's own zone, else its owner's: where its day buckets are kept


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose usage a report reads, and from where: the zone its days are counted in, and the
    instant it is made as of (aware, in that zone)."""

    device_id: str | None  # None: every device of the user in `devices`
    devices: Sequence[DeviceRef]
    tz: ZoneInfo
    currency: str
    now: datetime


@dataclass(frozen=True, slots=True)
class Report:
    device_id: str | None
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


@dataclass(frozen=True, slots=True)
class Forecast(Report):
    month: MonthForecast | None
    days: list[DayForecast]


@dataclass(frozen=True, slots=True)
class Anomalies(Report):
    since: date
    days: list[DayAnomaly]
    hours: list[HourAnomaly]


def _report(subject: Subject) -> dict[str, Any]:
    """The fields every report starts with: whose, in which zone and currency, as of when."""
    return {
        "device_id": subject.device_id,
        "timezone": subject.tz.key,
        "currency": subject.currency,
        "at": subject.now,
    }


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _has_data(bucket: Bucket) -> bool:
    """Whether a bucket tells how much was used. One without energy counts only when idle: with
    samples of no power (or counters that did not move). Not when emptied by a recomputation (it
    stays stored with zeros), nor when it holds only the closing sample of a run, whose energy
    lies before it: either would read as a period of 0 W never seen."""
    if bucket.energy_wh != 0:
        return True
    return bucket.samples > 0 and not bucket.max_power_w and not bucket.min_power_w


def _days_of(buckets: Iterable[Bucket], tz: ZoneInfo) -> list[Day]:
    return [
        Day(datetime.fromtimestamp(b.start / 1000, tz).date(), b.energy_wh / 1000.0, b.cost)
        for b in buckets
        if _has_data(b)
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


def _summed_days(subject: Subject, per_device: dict[str, list[Bucket]]) -> list[Day]:
    """The devices' days added day by day."""
    return _days_of(queries.summed(Granularity.DAY, chain(*per_device.values())), subject.tz)


async def _hours(store: SeriesStore, subject: Subject, lo: int, hi: int) -> list[Hour]:
    """The devices' hours summed, with lo <= start < hi (hour buckets are UTC: no zone to mind)."""
    if not subject.devices:
        return []
    buckets = await store.buckets([d.id for d in subject.devices], Granularity.HOUR, lo, hi)
    return [
        Hour(datetime.fromtimestamp(b.start / 1000, subject.tz), b.energy_wh / 1000.0, b.cost)
        for b in queries.summed(Granularity.HOUR, buckets)
        if _has_data(b)
    ]


async def summary(store: SeriesStore, subject: Subject) -> Summary:
    """Baseload over the last 14 full days, this month against last, the biggest devices."""
    today = subject.now.date()
    this_month = analysis.month_start(today)
    first = min(analysis.previous_month_start(today), today - timedelta(days=RECENT_DAYS))
    per_device = await _day_buckets(store, subject, first)
    hours = await _hours(
        store,
        subject,
        _ms(analysis.local_midnight(today - timedelta(days=RECENT_DAYS), subject.tz)),
        _ms(analysis.local_midnight(today, subject.tz)),
    )
    comparison = analysis.month_comparison(_summed_days(subject, per_device), today)
    totals = []
    for device in subject.devices:
        days = _days_of(per_device[device.id], subject.tz)
        month = [d for d in days if d.day >= this_month]
        totals.append(
            DeviceTotal(
                device.id,
                device.name,
                sum(d.energy_kwh for d in month),
                sum(d.cost for d in month),
            )
        )
    return Summary(
        **_report(subject),
        baseload=analysis.baseload(hours),
        month_to_date=comparison.month_to_date,
        last_month=comparison.last_month,
        change_pct=comparison.change_pct,
        top_devices=analysis.top_devices(totals),
    )


async def forecast(store: SeriesStore, subject: Subject) -> Forecast:
    """This month's total and each of the next seven days."""
    today = subject.now.date()
    first = min(analysis.month_start(today), today - timedelta(days=HISTORY_DAYS))
    days = _summed_days(subject, await _day_buckets(store, subject, first))
    return Forecast(
        **_report(subject),
        month=analysis.month_forecast(days, subject.now),
        days=analysis.daily_forecast(days, today),
    )


async def anomalies(store: SeriesStore, subject: Subject, window_days: int) -> Anomalies:
    """Odd days and hours of the last `window_days` days, each against the 28 days before it."""
    today = subject.now.date()
    since = today - timedelta(days=window_days)
    first = since - timedelta(days=HISTORY_DAYS)
    days = _summed_days(subject, await _day_buckets(store, subject, first))
    since_at = analysis.local_midnight(since, subject.tz)
    hours = await _hours(
        store, subject, _ms(analysis.local_midnight(first, subject.tz)), _ms(subject.now)
    )
    return Anomalies(
        **_report(subject),
        since=since,
        days=analysis.day_anomalies(days, since, today),
        hours=analysis.hour_anomalies(hours, since_at, subject.now),
    )
