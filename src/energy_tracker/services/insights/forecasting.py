"""Forecasts over an hourly series: the next hours, the next days and the month, each with an 80 %
interval. Pure functions over numpy arrays (no I/O), shared by the API and by the backtest
(`evaluate.py`), so what is measured is what is served.

Why these estimators (chosen by `energy-tracker evaluate` on real homes, see the README): a
household's hour is mostly noise around a daily and weekly rhythm, and which rhythm tells most
changes from home to home and month to month. So each forecast is a blend of a few robust
estimators, each weighed by how well it did over the last days (a home whose week repeats
favours the hour of the week; one whose habits drift, the last days). Hours use medians (hourly
kWh is heavy-tailed, one oven evening must not move next Tuesday, and the median minimises the
absolute error); days blend a recency-weighted mean (right when days are alike) with medians of
days of the same kind and of the same weekday (right when a few days use much: a washing
machine's). The 80 % intervals are split conformal over the blend's own recent errors (hours: at
the same local hour; days: at the same distance ahead), so their width is learnt from the home,
not assumed.

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
# The hour estimators read the same local hour on this many earlier days and weeks.
HOUR_DAYS = 28
HOUR_WEEKS = 8
RECENT_DAYS = 7
# The pooled median weighs an hour seen this many days ago half as much as one seen today.
POOL_HALF_LIFE_D = 21.0
# The blend weighs each estimator by its mean absolute error over the last HOUR_BLEND_DAYS days
# (days: DAY_BLEND_DAYS) to the power -BLEND_POWER: 8 is almost "the best of late", and was
# better or tied against 2 and 4 on the hours and 1, 2 and 4 on the days (`make evaluate`).
HOUR_BLEND_DAYS = 7
BLEND_POWER = 8.0
# Interval: split conformal at 80 % over the blend's errors of the last 28 days (days: 8 weeks).
INTERVAL_DAYS = 28
COVERAGE = 0.80
# Where many errors are exactly 0 (a sub-meter idle most hours, forecast at 0), a narrower band
# may hold as many of them as the 80 % band's ranks: the narrowest of these that does is kept.
NARROWER = (0.75, 0.70, 0.65, 0.60, 0.50, 0.40, 0.30, 0.20)
# With fewer days of history the estimators say they had only the recent days.
MIN_DAYS_PROFILE = 14

Method = Literal["profile", "recent-days", "none"]
HOUR_ESTIMATORS = ("pooled", "last-7-days", "day-kind", "hour-of-week")


# -- hours -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HourForecast:
    kwh: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: Method
    # Each estimator's weight in the blend (empty without history): which of them answered.
    weights: dict[str, float]


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted median of each row of `values` (the lowest value whose cumulative weight
    reaches half the row's), ignoring NaN; NaN for a row with nothing."""
    w = np.where(np.isnan(values), 0.0, np.broadcast_to(weights, values.shape))
    order = np.argsort(np.where(np.isnan(values), np.inf, values), axis=-1)
    v = np.take_along_axis(values, order, -1)
    cum = np.cumsum(np.take_along_axis(w, order, -1), -1)
    total = cum[..., -1:]
    at = np.argmax(cum >= 0.5 * total, axis=-1)
    out = np.take_along_axis(v, at[..., None], -1)[..., 0]
    return np.where(total[..., 0] > 0, out, np.nan)


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN; NaN where a row has none. (By sorting, NaN last:
    numpy's nanmedian takes a masked-array path that is ten times slower on short rows.)"""
    ordered = np.sort(values, axis=1)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    rows = np.arange(values.shape[0])
    low = ordered[rows, np.maximum(count - 1, 0) // 2]
    high = ordered[rows, count // 2]
    return np.where(count > 0, (low + high) / 2, np.nan)


def _same_hour_back(
    cal: Calendar, origin: int, targets: np.ndarray, step_days: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each target hour, the indexes of the same local hour `step_days` × k days earlier for
    the `count` smallest k whose hour is before `origin` (-1 where the series has no such hour,
    e.g. before its start or in a DST gap), and those distances in days. Local days, not 24 h
    steps, so that a DST change does not shift the hours compared."""
    t_day = cal.day[targets].astype(np.int64)
    t_hour = cal.hour[targets].astype(np.int64)
    last_day, last_hour = int(cal.day[origin - 1]), int(cal.hour[origin - 1])
    steps, rest = np.divmod(t_day - last_day, step_days)
    k0 = np.where((rest == 0) & (t_hour <= last_hour), steps, steps + 1)
    back = step_days * (np.maximum(k0, 1)[:, None] + np.arange(count)[None, :])
    # The local (day, hour) -> index grid of the hours these can reach.
    lo = max(0, origin - 25 * (int(back.max()) + 1))
    end = int(targets[-1]) + 1
    first_day = int(cal.day[lo])
    grid = np.full((int(cal.day[end - 1]) - first_day + 1, 24), -1, dtype=np.int64)
    grid[cal.day[lo:end] - first_day, cal.hour[lo:end]] = np.arange(lo, end)
    row = t_day[:, None] - back - first_day
    idx = np.where(row >= 0, grid[np.clip(row, 0, None), t_hour[:, None]], -1)
    return np.where(idx < origin, idx, -1), back


def hour_candidates(kwh: np.ndarray, cal: Calendar, origin: int, horizon: int) -> np.ndarray:
    """Each estimator's (HOUR_ESTIMATORS, rows) estimate of hours origin..origin+horizon-1 from
    the hours before `origin` (NaN where one has nothing):
    - pooled: the weighted median of the same hour on the last HOUR_WEEKS weeks and on the last
      HOUR_DAYS days of the same kind (working day or day off), weights halving every
      POOL_HALF_LIFE_D days;
    - last-7-days: the median of the same hour on the last RECENT_DAYS days;
    - day-kind: the median of the same hour on the last HOUR_DAYS days of the same kind;
    - hour-of-week: the median of the same hour of the week over HOUR_WEEKS weeks.
    Medians, not means: an hour's kWh is heavy-tailed, and the median is what minimises the
    absolute error."""
    targets = np.arange(origin, origin + horizon)
    d_idx, d_back = _same_hour_back(cal, origin, targets, 1, HOUR_DAYS)
    w_idx, w_back = _same_hour_back(cal, origin, targets, 7, HOUR_WEEKS)
    daily = np.where(d_idx >= 0, kwh[d_idx], np.nan)
    weekly = np.where(w_idx >= 0, kwh[w_idx], np.nan)
    same_kind = cal.off[d_idx] == cal.off[targets][:, None]
    kind = np.where(same_kind, daily, np.nan)
    pool = np.concatenate([weekly, kind], axis=1)
    weight = 0.5 ** (np.concatenate([w_back, d_back], axis=1) / POOL_HALF_LIFE_D)
    return np.stack(
        [
            weighted_median(pool, weight),
            _nanmedian_rows(daily[:, :RECENT_DAYS]),
            _nanmedian_rows(kind),
            _nanmedian_rows(weekly),
        ]
    )


def day_ahead_candidates(kwh: np.ndarray, cal: Calendar, first: int, end: int) -> np.ndarray:
    """What each estimator said of each hour of first..end-1 at the start of its local day (NaN
    where it had nothing): the errors these make weigh the blend and give the interval."""
    out = np.full((len(HOUR_ESTIMATORS), end - first), np.nan)
    i = first
    while i < end:
        j = i
        while j < end and cal.day[j] == cal.day[i]:
            j += 1
        if i > 0:
            out[:, i - first : j - first] = hour_candidates(kwh, cal, i, j - i)
        i = j
    return out


def blend_weights(actual: np.ndarray, past: np.ndarray) -> np.ndarray:
    """Each estimator's weight: its mean absolute error over `actual` (the recent hours or
    days) to the power -BLEND_POWER, normalised; an estimator without any error known gets the
    worst of the others', and all equal weights when none has any."""
    err = np.abs(actual[None, :] - past)
    known = ~np.isnan(err)
    count = known.sum(axis=1)
    mae = np.where(count > 0, np.where(known, err, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    if np.isnan(mae).all():
        return np.full(past.shape[0], 1.0 / past.shape[0])
    mae = np.where(np.isnan(mae), np.nanmax(mae), mae)
    weight = 1.0 / np.maximum(mae, 1e-9 * max(float(np.nanmax(mae)), 1e-12)) ** BLEND_POWER
    return weight / weight.sum()


def _named(names: tuple[str, ...], weights: np.ndarray) -> dict[str, float]:
    return {name: round(float(w), 3) for name, w in zip(names, weights, strict=True)}


def blend(candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of the estimators that have a value, per column; NaN where none has."""
    has = ~np.isnan(candidates)
    w = np.where(has, weights[:, None], 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * np.nan_to_num(candidates)).sum(axis=0) / total, np.nan)


def interval(errors: np.ndarray) -> tuple[float, float]:
    """The 80 % range of a forecast from its estimator's past `errors` (no NaN), split conformal:
    of n sorted errors, the floor((n + 1) × 0.1)-th and the ceil((n + 1) × 0.9)-th (slightly
    wider than the 10th and 90th percentiles, as a new error is one of n + 1). Where ties hold
    as many errors in a narrower band (NARROWER: a sub-meter idle most hours, its errors mostly
    exactly 0), the narrowest such band."""
    e = np.sort(errors)
    n = e.size
    best: tuple[float, float] | None = None
    need = 0.0
    for c in (COVERAGE, *NARROWER):
        # (1e-9: 20 × (1 - 0.8) / 2 is 1.9999999999999996 in floating point.)
        lo_rank = max(int(np.floor((n + 1) * (1 - c) / 2 + 1e-9)), 1)
        hi_rank = min(int(np.ceil((n + 1) * (1 + c) / 2 - 1e-9)), n)
        lo, hi = float(e[lo_rank - 1]), float(e[hi_rank - 1])
        held = np.count_nonzero((e >= lo) & (e <= hi))
        if best is None:
            best, need = (lo, hi), hi_rank - lo_rank + 1
        elif held >= need:
            best = (lo, hi)
        else:
            break
    assert best is not None
    return best


def forecast_hours(
    kwh: np.ndarray,
    cal: Calendar,
    origin: int,
    horizon: int,
    past: np.ndarray | None = None,
) -> HourForecast:
    """Hours origin..origin+horizon-1 from the hours before `origin`, each with an 80 % interval.
    `cal` covers the history and the horizon. The estimators of `hour_candidates`, blended by
    their errors over the last HOUR_BLEND_DAYS days (a home whose week repeats favours the
    hour of the week; one whose habits drift, the last days), give or take the percentiles of
    the blend's own errors over the last INTERVAL_DAYS days at the same local hour (±1 h).
    With under two weeks of history the same estimators on what there is (method
    `recent-days`); with no hour at all: NaN and method `none`. `past` (from
    `day_ahead_candidates` over the INTERVAL_DAYS × 24 hours before `origin`) may be passed in
    when already computed; the backtest computes it once for all its origins."""
    seen = kwh[:origin]
    have = int(np.count_nonzero(~np.isnan(seen)))
    if have == 0:
        nan = np.full(horizon, np.nan)
        return HourForecast(nan, nan, nan, "none", {})
    method: Method = "profile" if have >= MIN_DAYS_PROFILE * 24 else "recent-days"
    if past is None:
        past = day_ahead_candidates(kwh, cal, max(0, origin - INTERVAL_DAYS * 24), origin)
    recent = kwh[origin - past.shape[1] : origin]
    blend_from = max(0, past.shape[1] - HOUR_BLEND_DAYS * 24)
    weights = blend_weights(recent[blend_from:], past[:, blend_from:])
    pred = blend(hour_candidates(kwh, cal, origin, horizon), weights)
    pred = np.where(np.isnan(pred), _hour_fallback(seen, cal, origin, horizon), pred)
    errors = recent - blend(past, weights)
    if np.nanmin(seen) >= 0:
        np.clip(pred, 0.0, None, out=pred)
    err_hours = cal.hour[origin - errors.size : origin]
    low, high = np.full(horizon, np.nan), np.full(horizon, np.nan)
    targets_hour = cal.hour[origin : origin + horizon]
    for h in range(24):
        near = (err_hours - h) % 24
        sample = errors[((near <= 1) | (near == 23)) & ~np.isnan(errors)]
        if sample.size < 5:
            sample = errors[~np.isnan(errors)]
        if sample.size == 0:  # no error to learn from: the spread of the hours themselves
            sample = seen[~np.isnan(seen)] - float(np.nanmean(seen))
        q_lo, q_hi = interval(sample)
        at = targets_hour == h
        low[at], high[at] = pred[at] + q_lo, pred[at] + q_hi
    low = np.minimum(low, pred)
    high = np.maximum(high, pred)
    if np.nanmin(seen) >= 0:
        np.clip(low, 0.0, None, out=low)
    return HourForecast(pred, low, high, method, _named(HOUR_ESTIMATORS, weights))


def _hour_fallback(seen: np.ndarray, cal: Calendar, origin: int, horizon: int) -> np.ndarray:
    """For hours no estimator answers (the history is older than every estimator's window, or
    has gaps there): the median of that local hour over all the history, else of every hour
    there is, so that a cold start says something rather than nothing (never NaN)."""
    known = ~np.isnan(seen)
    out = np.full(horizon, float(np.median(seen[known])))
    seen_hours, target_hours = cal.hour[:origin], cal.hour[origin : origin + horizon]
    for h in np.unique(target_hours):
        same = seen[known & (seen_hours == h)]
        if same.size:
            out[target_hours == h] = float(np.median(same))
    return out


# -- days --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayForecast:
    kwh: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: Method
    # Each estimator's weight in the blend (empty without history): which of them answered.
    weights: dict[str, float]


DAY_LEVEL_DAYS = 28
DAY_HALF_LIFE = 4.0
KIND_SHRINK = 0.5
# The day-kind median reads this many days, weights halving every DAY_KIND_HALF_LIFE days; the
# weekday median this many weeks; the blend weighs them by their errors over DAY_BLEND_DAYS.
DAY_KIND_DAYS = 42
DAY_KIND_HALF_LIFE = 14.0
DAY_WEEKS = 6
DAY_BLEND_DAYS = 56
DAY_ESTIMATORS = ("level", "day-kind", "weekday")


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
    out[:] = level
    off = _off_days(days, origin, horizon)
    for kind_off in (False, True):
        same = known & (past_off == kind_off)
        if same.sum() >= 2 and level > 0:
            kind = float(np.sum(weight[same] * past[same]) / np.sum(weight[same]))
            out[off == kind_off] = level * (1 + KIND_SHRINK * (kind / level - 1))
    return out


def _off_days(days: DaySeries, origin: int, horizon: int) -> np.ndarray:
    """Whether each of days origin..origin+horizon-1 is a day off (past the series: no)."""
    off = np.zeros(horizon, dtype=bool)
    have = min(horizon, max(0, days.off.size - origin))
    off[:have] = days.off[origin : origin + have]
    return off


def day_candidates(days: DaySeries, origin: int, horizon: int) -> np.ndarray:
    """Each estimator's (DAY_ESTIMATORS, rows) estimate of days origin..origin+horizon-1 from
    the days before `origin` (NaN where one has nothing): the level (`level_days`: a mean, right
    for a home whose days are alike); the weighted median of the last DAY_KIND_DAYS days of the
    same kind (right where most days use little and a few much, a washing machine's); the
    median of the same weekday over the last DAY_WEEKS weeks (a load run on set days)."""
    targets = np.arange(origin, origin + horizon)
    off = _off_days(days, origin, horizon)
    lo = max(0, origin - DAY_KIND_DAYS)
    past, past_off = days.kwh[lo:origin], days.off[lo:origin]
    weight = 0.5 ** (np.arange(past.size)[::-1] / DAY_KIND_HALF_LIFE)
    same = past_off[None, :] == off[:, None]
    kind = weighted_median(np.where(same, past[None, :], np.nan), weight)
    # The same weekday: whole weeks back from each target, skipping those not yet seen.
    back = 7 * ((targets - origin) // 7 + 1)[:, None] + 7 * np.arange(DAY_WEEKS)[None, :]
    idx = targets[:, None] - back
    weekday = _nanmedian_rows(np.where(idx >= 0, days.kwh[np.clip(idx, 0, None)], np.nan))
    return np.stack([level_days(days, origin, horizon), kind, weekday])


def days_ahead(days: DaySeries, first: int, end: int, horizon: int) -> np.ndarray:
    """What each estimator said at each origin first..end-1 of the `horizon` days from it:
    (DAY_ESTIMATORS, origins, horizon)."""
    out = np.full((len(DAY_ESTIMATORS), end - first, horizon), np.nan)
    for d in range(max(first, 1), end):
        out[:, d - first, :] = day_candidates(days, d, horizon)
    return out


def day_errors(days: DaySeries, origin: int) -> np.ndarray:
    """Actual minus the one-day-ahead level over the INTERVAL_DAYS * 2 days before `origin`
    (the month projection's range)."""
    first = max(1, origin - 2 * INTERVAL_DAYS)
    return np.array(
        [days.kwh[d] - level_days(days, d, 1)[0] for d in range(first, origin)], dtype=float
    )


def forecast_days(
    days: DaySeries, origin: int, horizon: int, past: np.ndarray | None = None
) -> DayForecast:
    """Days origin..origin+horizon-1 (indexes into `days`, which carries their day-off flags)
    from the days before `origin`: the estimators of `day_candidates` blended by their
    one-day-ahead errors over the last DAY_BLEND_DAYS days, each day with an 80 % interval from
    the percentiles of the blend's errors at the same distance ahead over the last eight weeks
    (a week ahead errs more than tomorrow). `past` (`days_ahead` over the 2 × INTERVAL_DAYS
    origins before `origin`, at least `horizon` days ahead) may be passed in when already
    computed; the backtest computes it once for all its origins."""
    known = int(np.count_nonzero(~np.isnan(days.kwh[:origin])))
    if known == 0:
        nan = np.full(horizon, np.nan)
        return DayForecast(nan, nan, nan, "none", {})
    if past is None:
        past = days_ahead(days, max(0, origin - 2 * INTERVAL_DAYS), origin, horizon)
    n = past.shape[1]
    made = np.arange(origin - n, origin)  # the origin of each row of `past`
    recent = days.kwh[made]
    blend_from = max(0, n - DAY_BLEND_DAYS)
    weights = blend_weights(recent[blend_from:], past[:, blend_from:, 0])
    pred = blend(day_candidates(days, origin, horizon), weights)
    seen = days.kwh[:origin][~np.isnan(days.kwh[:origin])]
    # No estimator answers for a day whose kind and weekday the recent weeks never had (a
    # history of two Sundays a month ago): the median of every day there is.
    pred = np.where(np.isnan(pred), float(np.median(seen)), pred)
    low, high = np.full(horizon, np.nan), np.full(horizon, np.nan)
    for j in range(horizon):
        done = made + j < origin  # forecasts whose day j ahead is already known
        errors = days.kwh[made[done] + j] - blend(past[:, done, j], weights)
        errors = errors[~np.isnan(errors)]
        if errors.size >= 5:
            q_lo, q_hi = interval(errors)
        else:  # too few days to learn from: the spread of the days themselves
            q_lo, q_hi = interval(seen - seen.mean())
        low[j], high[j] = min(pred[j] + q_lo, pred[j]), max(pred[j] + q_hi, pred[j])
    if np.nanmin(seen) >= 0:
        low = np.clip(low, 0.0, None)
    method: Method = "profile" if known >= MIN_DAYS_PROFILE else "recent-days"
    return DayForecast(pred, low, high, method, _named(DAY_ESTIMATORS, weights))


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
    seen = days.kwh[:origin][~np.isnan(days.kwh[:origin])]
    if seen.size:  # no day in the level's weeks: the median of every day there is
        level = np.where(np.isnan(level), float(np.median(seen)), level)
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
