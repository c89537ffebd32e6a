"""Forecasts over an hourly series: the next hours, the next days and the month, each with an 80 %
interval. Pure functions over numpy arrays (no I/O), shared by the API and by the backtest
(`evaluate.py`), so what is measured is what is served.

Why these estimators (chosen by `energy-tracker evaluate` on real homes, see the README): a
household's hour is mostly noise around a weekly rhythm, so the best single guess is a robust
profile of the same hour over recent weeks (the median: hourly kWh is heavy-tailed, one oven
evening must not move next Tuesday), blended with the same hour on recent days of the same kind
(working day or weekend/holiday), and pulled towards the hour just seen for the first few hours
(a load that is on now is probably still on in an hour). A day is the sum of many hours, so its
noise is milder and its mean matters: the days use means of recent days of the same kind. The
80 % intervals are the 10th and 90th percentiles of the same estimator's own errors over the
last four weeks (split conformal), so their width is learnt from the home, not assumed.

The series, their calendar (local hour, local date, day off) and their local days are those of
`core.hours`, which the anomaly detector (`core.anomalies`) reads too.
"""

from __future__ import annotations

import calendar as _calendar
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import numpy as np

from energy_tracker.core.hours import Calendar, DaySeries

WEEK_H = 168
# The hour-of-week profile reads this many earlier weeks; the day-kind profile this many days.
PROFILE_WEEKS = 6
PROFILE_DAYS = 21
# The hour just seen pulls the next hours towards it, less with every hour: its deviation from the
# profile decays by this factor an hour (measured: 0.6 fits the homes evaluated best).
PERSISTENCE = 0.6
# Interval: the 10th and 90th percentiles of the estimator's errors over the last 28 days.
INTERVAL_DAYS = 28
LOW_Q, HIGH_Q = 10.0, 90.0
# With fewer days of history the estimators say they fell back to the recent days only.
MIN_DAYS_PROFILE = 14
DAY_LEVEL_DAYS = 28
DAY_HALF_LIFE = 4.0
KIND_SHRINK = 0.5

Method = Literal["profile", "recent-days", "none"]


# -- hours -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HourForecast:
    kwh: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: Method


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN; NaN where a row has none (without numpy's warning)."""
    out = np.full(values.shape[0], np.nan)
    has = ~np.all(np.isnan(values), axis=1)
    if has.any():
        out[has] = np.nanmedian(values[has], axis=1)
    return out


def profile_hours(kwh: np.ndarray, cal: Calendar, origin: int, horizon: int) -> np.ndarray:
    """The profile estimate of hours origin..origin+horizon-1 from the hours before `origin`:
    the mean of (a) the median of the same hour of the week over PROFILE_WEEKS weeks and (b) the
    median of the same local hour on the last PROFILE_DAYS days of the same kind (working day
    or day off); whichever exists when the other does not; NaN when neither does."""
    targets = np.arange(origin, origin + horizon)
    lags = np.arange(1, PROFILE_WEEKS + 1) * WEEK_H
    # Same hour of the week: skip back whole weeks until before the origin.
    weeks_back = (targets[:, None] - origin) // WEEK_H + 1
    idx = targets[:, None] - lags[None, :] - (weeks_back - 1) * WEEK_H
    weekly = np.where(idx >= 0, kwh[np.clip(idx, 0, None)], np.nan)
    a = _nanmedian_rows(weekly)
    lo = max(0, origin - PROFILE_DAYS * 24)
    past_hour, past_off, past = cal.hour[lo:origin], cal.off[lo:origin], kwh[lo:origin]
    b = np.full(horizon, np.nan)
    for h in range(24):
        for off in (False, True):
            chosen = past[(past_hour == h) & (past_off == off)]
            chosen = chosen[~np.isnan(chosen)]
            if chosen.size:
                b[(cal.hour[targets] == h) & (cal.off[targets] == off)] = np.median(chosen)
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, (a + b) / 2))


def _with_persistence(pred: np.ndarray, kwh: np.ndarray, origin: int, last_pred: float) -> None:
    """Pull the first hours towards the last hour seen (in place): its deviation from what the
    profile expected of it, decaying by PERSISTENCE an hour."""
    if origin == 0 or np.isnan(kwh[origin - 1]) or np.isnan(last_pred):
        return
    deviation = kwh[origin - 1] - last_pred
    pred += deviation * PERSISTENCE ** np.arange(1, pred.size + 1)


def day_ahead_profile(kwh: np.ndarray, cal: Calendar, first: int, end: int) -> np.ndarray:
    """What the profile forecast made at the start of each local day said of each hour of
    first..end-1 (NaN where it had nothing): the errors these make are the interval's basis."""
    out = np.full(end - first, np.nan)
    i = first
    while i < end:
        j = i
        while j < end and cal.day[j] == cal.day[i]:
            j += 1
        out[i - first : j - first] = profile_hours(kwh, cal, i, j - i)
        i = j
    return out


def hour_errors(kwh: np.ndarray, cal: Calendar, origin: int) -> np.ndarray:
    """Actual minus the day-ahead profile over the INTERVAL_DAYS days before `origin`."""
    first = max(0, origin - INTERVAL_DAYS * 24)
    return kwh[first:origin] - day_ahead_profile(kwh, cal, first, origin)


def forecast_hours(
    kwh: np.ndarray,
    cal: Calendar,
    origin: int,
    horizon: int,
    errors: np.ndarray | None = None,
) -> HourForecast:
    """Hours origin..origin+horizon-1 from the hours before `origin`, each with an 80 % interval.
    `cal` covers the history and the horizon. With two weeks of history: the profile, pulled
    towards the last hour seen, give or take the percentiles of its own recent errors at the
    same local hour (±1 h); with less: the recent days' hour-of-day profile, the same way; with
    no hour at all: NaN and method `none`. `errors` (from `hour_errors`) may be passed in when
    already computed; the backtest computes them once for all its origins."""
    seen = kwh[:origin]
    have = int(np.count_nonzero(~np.isnan(seen)))
    if have == 0:
        nan = np.full(horizon, np.nan)
        return HourForecast(nan, nan, nan, "none")
    method: Method = "profile" if have >= MIN_DAYS_PROFILE * 24 else "recent-days"
    pred = profile_hours(kwh, cal, origin, horizon)
    last = profile_hours(kwh, cal, origin - 1, 1)[0] if origin > 0 else np.nan
    _with_persistence(pred, kwh, origin, last)
    np.clip(pred, 0.0, None, out=pred) if np.nanmin(seen) >= 0 else None
    if errors is None:
        errors = hour_errors(kwh, cal, origin)
    err_hours = cal.hour[origin - errors.size : origin]
    low, high = np.full(horizon, np.nan), np.full(horizon, np.nan)
    targets_hour = cal.hour[origin : origin + horizon]
    for h in range(24):
        near = (err_hours - h) % 24
        sample = errors[((near <= 1) | (near == 23)) & ~np.isnan(errors)]
        if sample.size < 5:
            sample = errors[~np.isnan(errors)]
        if sample.size == 0:
            continue
        q_lo, q_hi = np.percentile(sample, [LOW_Q, HIGH_Q])
        at = targets_hour == h
        low[at], high[at] = pred[at] + q_lo, pred[at] + q_hi
    low = np.minimum(low, pred)
    high = np.maximum(high, pred)
    if np.nanmin(seen) >= 0:
        np.clip(low, 0.0, None, out=low)
    return HourForecast(pred, low, high, method)


# -- days --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayForecast:
    kwh: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: Method


def level_days(days: DaySeries, origin: int, horizon: int) -> np.ndarray:
    """Each of days origin..origin+horizon-1: the recent level, a mean of the last
    DAY_LEVEL_DAYS days whose weights halve every DAY_HALF_LIFE days (the level of a home drifts
    with the season and who is at home), times half the way to the ratio of days of the same
    kind (working day or day off) to that level (a full ratio overfits a few weekends)."""
    lo = max(0, origin - DAY_LEVEL_DAYS)
    past, past_off = days.kwh[lo:origin], days.off[lo:origin]
    known = ~np.isnan(past)
    out = np.full(horizon, np.nan)
    if not known.any():
        return out
    weight = 0.5 ** (np.arange(past.size)[::-1] / DAY_HALF_LIFE)
    level = float(np.sum(weight[known] * past[known]) / np.sum(weight[known]))
    for i in range(horizon):
        j = origin + i
        off = bool(days.off[j]) if j < days.off.size else False
        same = known & (past_off == off)
        out[i] = level
        if same.sum() >= 2 and level > 0:
            kind = float(np.sum(weight[same] * past[same]) / np.sum(weight[same]))
            out[i] = level * (1 + KIND_SHRINK * (kind / level - 1))
    return out


def day_errors(days: DaySeries, origin: int) -> np.ndarray:
    """Actual minus the one-day-ahead level over the INTERVAL_DAYS * 2 days before `origin`."""
    first = max(1, origin - 2 * INTERVAL_DAYS)
    return np.array(
        [days.kwh[d] - level_days(days, d, 1)[0] for d in range(first, origin)], dtype=float
    )


def forecast_days(days: DaySeries, origin: int, horizon: int) -> DayForecast:
    """Days origin..origin+horizon-1 (indexes into `days`, which carries their day-off flags)
    from the days before `origin`, with an 80 % interval from the percentiles of the level's own
    errors over the last eight weeks."""
    pred = level_days(days, origin, horizon)
    known = int(np.count_nonzero(~np.isnan(days.kwh[:origin])))
    if known == 0:
        return DayForecast(pred, pred.copy(), pred.copy(), "none")
    errors = day_errors(days, origin)
    errors = errors[~np.isnan(errors)]
    if errors.size >= 5:
        q_lo, q_hi = np.percentile(errors, [LOW_Q, HIGH_Q])
    else:  # too few days to learn from: the spread of the days themselves
        past = days.kwh[:origin][~np.isnan(days.kwh[:origin])]
        q_lo, q_hi = np.percentile(past - past.mean(), [LOW_Q, HIGH_Q])
    low, high = np.minimum(pred + q_lo, pred), np.maximum(pred + q_hi, pred)
    if np.nanmin(days.kwh[:origin]) >= 0:
        low = np.clip(low, 0.0, None)
    method: Method = "profile" if known >= MIN_DAYS_PROFILE else "recent-days"
    return DayForecast(pred, low, high, method)


def days_in_month(day: date) -> int:
    return _calendar.monthrange(day.year, day.month)[1]


def month_start_index(days: DaySeries, index: int) -> int:
    d = date.fromordinal(days.first + index)
    return index - (d.day - 1)


def next_month_index(days: DaySeries, index: int) -> int:
    d = date.fromordinal(days.first + index)
    return index - (d.day - 1) + days_in_month(d)


def local_day_index(days: DaySeries, moment: datetime) -> int:
    return moment.date().toordinal() - days.first


@dataclass(frozen=True, slots=True)
class MonthProjection:
    kwh: float
    low: float
    high: float
    so_far_kwh: float
    remaining_days: float


MONTH_RATE_WEIGHT = 0.5
# 80 % of a normal distribution lies within this many standard deviations of its mean.
Z80 = 1.2816


def project_month(
    days: DaySeries, origin: int, so_far_kwh: float, today_left: float = 1.0
) -> MonthProjection:
    """The month holding day `origin` (today): `so_far_kwh` (the month's days before today and
    what today has used) plus the rest, `today_left` of today (0-1) and each day after it. The
    rest is half the recent level (`level_days`) and half the month's own rate so far (which
    alone is the scale-up); the range is ±Z80 standard deviations of the level's day errors ×
    √(days left).

    No seasonal factor (the rest of the month a year earlier against the days before it): on
    the four UCI series it made the day-10 error worse than without it (÷ scale-up 0.93-1.38
    with it, 0.92-1.04 without; `make evaluate`), a year-old month's shape is mostly noise."""
    end = next_month_index(days, origin)
    left = end - origin - 1 + today_left
    level = level_days(days, origin, end - origin)
    rest = float(np.nansum(level[1:])) + float(level[0]) * today_left if level.size else 0.0
    elapsed = origin - month_start_index(days, origin) + 1 - today_left
    if elapsed > 0:
        rest = (1 - MONTH_RATE_WEIGHT) * rest + MONTH_RATE_WEIGHT * so_far_kwh / elapsed * left
    errors = day_errors(days, origin)
    errors = errors[~np.isnan(errors)]
    spread = float(errors.std()) if errors.size > 1 else 0.0
    margin = Z80 * spread * float(np.sqrt(left))
    low = so_far_kwh + max(rest - margin, 0.0)
    high = so_far_kwh + rest + margin
    return MonthProjection(so_far_kwh + rest, low, high, so_far_kwh, left)
