"""Anomalies of the kinds a household acts on, found in an hourly series and, where the store
has them, its quarter hours: a load stuck on, a baseload step, a spike, usage at an hour that
is usually quiet, a meter gone silent. Pure numpy over the arrays of `core.hours` (NaN: no
data), in the core so that one detector serves the insights API, its backtest
(`services/insights/evaluate.py`, which measures recall on faults injected into real homes and
the false alarms on the homes as they are) and the alerts.

Why this way: a household's use is heavy-tailed and follows a daily rhythm, so a slot (an hour,
or a quarter hour) is judged against the same local time of day ±1 h over the four weeks before
its day, by percentiles and medians (one odd evening neither hides the next nor makes ordinary
ones look odd), and every kind needs an absolute size a household would act on (hundreds of
watts, not a z-score alone). The kinds differ in shape: hours on end lifted above even the
quietest level of their time of day (a heater left on), a slot above anything seen at that time
of day for a month (a spike; at an hour that is usually quiet, an unusual hour), days whose
always-on level stepped up, hours with no data where the meter always sent some. Quarter hours
tell a half-hour spike from a busy hour (in hours it is spread over two, each within what the
home's evenings reach) and a load left on from heating that cycles. A home whose own use often
tops its month would raise a spike alarm every few weeks: a spike must also beat the home's own
largest excess of the eight weeks before, which bounds those alarms to about one in that time
(a new highest out of eight weeks of slots) whatever the home.

Thresholds were chosen with `make evaluate` on the first half of the UCI series (Dec 2006 to
Nov 2008) and checked on the second (README, "Insights, measured").
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from energy_tracker.core.hours import Bools, Calendar, Floats, Ints, days_of

Kind = Literal["stuck_on", "baseload_step", "spike", "unusual_hour", "silence"]

# An hour is judged against the same local hour (and the hours either side of it) over this
# many days before its day.
HISTORY_DAYS = 28
# A MAD times this estimates the standard deviation of normally distributed values.
MAD_TO_SIGMA = 1.4826
# Fewer earlier hours than this (in slots: times the slots an hour) at a time of day: it is not
# judged.
MIN_HOURS = 14
# The spread of a slot: the 10th to 90th percentile range of its earlier values over 2.563 (that
# range of a normal distribution in standard deviations), at least MIN_SPREAD_KW.
SPREAD_PER_SIGMA = 2.563
MIN_SPREAD_KW = 0.05
# Stuck on: STUCK_H hours or more on end, each slot at least STUCK_KW above the 10th percentile
# of its time of day (a load left on lifts even the quietest hours; a heater that cycles drops
# back in some quarter). Chosen on the UCI home: 1.8 kW keeps a 2 kW load left on 6 h found
# while the home's own heating evenings cross it about once in two months (in hours, before the
# quarters, about once a month).
STUCK_H = 6
STUCK_KW = 1.8
# A spike: a slot at least SPIKE_KW above the highest of its time of day over the four weeks
# before (and above the home's own largest such excess over CALIBRATION_DAYS). At an hour that
# is usually quiet (its 90th percentile at most QUIET_KW above the home's always-on level, the
# 10th percentile of all its slots) it is usage at an unusual hour.
SPIKE_KW = 1.0
QUIET_KW = 0.1
CALIBRATION_DAYS = 56
QUARTERS_PER_H = 4
# A baseload step: the always-on level of a day (the 10th percentile of its hours) at least
# STEP_KWH (an hour, i.e. 1,000 x that in W) and STEP_Z spreads above its median over the
# four weeks before, on STEP_DAYS days running (3: the UCI home's own two-day rises, a cold
# weekend, were most of its false steps; a load left on for a week is found as well).
STEP_KWH = 0.15
STEP_Z = 3.0
STEP_DAYS = 3
BASE_PERCENTILE = 10.0
# Silence: at least SILENCE_H hours without data after a week with at least SILENCE_SEEN of its
# hours recorded (a meter that seldom reports is not news when it does not).
SILENCE_H = 3
SILENCE_SEEN = 0.75


@dataclass(frozen=True, slots=True)
class Event:
    """One anomaly over hours first..end-1 of the series. `actual_kwh` and `expected_kwh` are
    the energy of the slots flagged (those hours, or those of their quarters that were; silence:
    0 recorded); for a baseload step, the always-on level
    of its days and of the four weeks before, times its hours. `score` is the excess in units
    of the usual spread (silence: hours silent / SILENCE_H)."""

    kind: Kind
    first: int
    end: int
    actual_kwh: float
    expected_kwh: float
    score: float


@dataclass(frozen=True, slots=True)
class Baselines:
    """For each slot (an hour, or a quarter hour) of first..end-1, in kW, from the same local
    time of day ±1 h over the HISTORY_DAYS days before its day: the 10th percentile, the median
    (what is expected), the highest, the spread, and whether that hour of the day is usually
    quiet. NaN (False) where too few slots were seen."""

    low: Floats
    expected: Floats
    top: Floats
    spread: Floats
    quiet: Bools


def _tops(kw: Floats, per_h: int, cal: Calendar, first: int, end: int) -> Floats:
    """The `top` of `baselines` alone (cheaper: no sort), for the slots first..end-1."""
    if end <= first:
        return np.empty(0)
    grid, row, slot = _day_grid(kw, per_h, cal, end)
    around = _around(per_h)
    out = np.full(end - first, np.nan)
    for r in np.unique(row[first:end]):
        days = grid[max(0, r - HISTORY_DAYS) : r]
        if np.count_nonzero(~np.isnan(days)) < MIN_HOURS * per_h:
            continue
        history = days[:, around]
        counts = np.count_nonzero(~np.isnan(history), axis=(0, 2))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN time of day
            top = np.nanmax(history, axis=(0, 2))
        top[counts < MIN_HOURS * per_h] = np.nan
        at = np.nonzero(row[first:end] == r)[0]
        out[at] = top[slot[first + at]]
    return out


def spike_margins(
    kw: Floats, per_h: int, cal: Calendar, top: Floats, lo: int, first: int, end: int
) -> Floats:
    """For each slot from hour `first` on, how far above the highest of its time of day it
    must be to be a spike: SPIKE_KW, or more in a home that went that far above its own
    highest in the CALIBRATION_DAYS before (its slots from hour `lo` to hour `end` have highest
    `top`): a spike must beat every one of them, so that a home whose evenings often top
    their month keeps about one such alarm in that time at most (a new record)."""
    day = cal.day[lo:end].repeat(per_h)
    with np.errstate(invalid="ignore"):
        excess = kw[lo * per_h : end * per_h] - top
    excess = np.where(np.isnan(excess), -np.inf, excess)
    skip, window = (first - lo) * per_h, CALIBRATION_DAYS * 24 * per_h
    out = np.full(day.size - skip, SPIKE_KW)
    starts = [0, *(np.nonzero(np.diff(day))[0] + 1), day.size]
    for a, z in itertools.pairwise(starts):  # one margin a day, from the days before it
        if z > skip and a > 0:
            level = float(excess[max(0, a - window) : a].max())
            out[max(a, skip) - skip : z - skip] = max(SPIKE_KW, level)
    return out


def _mad_sigma(values: Floats) -> float:
    middle = np.median(values)
    return float(MAD_TO_SIGMA * np.median(np.abs(values - middle)))


def _day_grid(kw: Floats, per_h: int, cal: Calendar, end: int) -> tuple[Floats, Ints, Ints]:
    """Slots 0..end-1 of `kw` as a matrix of local days x times of day (on the day clocks go
    back, the repeated hour keeps its second pass), with each slot's row and column: each
    day's samples are then a slice of it."""
    hours = -(-end // per_h)
    slot = (
        cal.hour[:hours].astype(np.int64).repeat(per_h)[:end] * per_h
        + np.tile(np.arange(per_h), hours)[:end]
    )
    row = (cal.day[:hours] - cal.day[0]).repeat(per_h)[:end]
    grid = np.full((int(row[-1]) + 1, 24 * per_h), np.nan)
    grid[row, slot] = kw[:end]
    return grid, row, slot


def _around(per_h: int) -> Ints:
    """For each time of day, the columns of the times within an hour of it."""
    slots = 24 * per_h
    return (np.arange(slots)[:, None] + np.arange(-per_h, per_h + 1)[None, :]) % slots


def baselines(kw: Floats, per_h: int, cal: Calendar, first: int, end: int) -> Baselines:
    """Baselines of slots first..end-1 of `kw` (per_h slots an hour, the hours of `cal`), each
    from the local days before its own."""
    n, slots = end - first, 24 * per_h
    grid, row, slot = _day_grid(kw, per_h, cal, end)
    around = _around(per_h)
    stats = np.full((5, n), np.nan)  # low, expected, top, spread, quiet (as 0/1)
    for r in np.unique(row[first:end]):
        history = grid[max(0, r - HISTORY_DAYS) : r]
        if np.count_nonzero(~np.isnan(history)) < MIN_HOURS * per_h:
            continue
        days = history.shape[0]
        sample = history[:, around].transpose(1, 0, 2).reshape(slots, -1)
        q10, q50, q90, top = _row_percentiles(sample, [10.0, 50.0, 90.0, 100.0])
        by_hour = history.reshape(days, 24, per_h).transpose(1, 0, 2).reshape(24, -1)
        (own_q90,) = _row_percentiles(by_hour, [90.0])
        (base,) = _row_percentiles(history.reshape(1, -1), [BASE_PERCENTILE])
        quiet = (own_q90 <= base[0] + QUIET_KW).repeat(per_h)
        spread = np.maximum((q90 - q10) / SPREAD_PER_SIGMA, MIN_SPREAD_KW)
        table = np.stack([q10, q50, top, spread, quiet.astype(float)])
        table[:, np.count_nonzero(~np.isnan(sample), axis=1) < MIN_HOURS * per_h] = np.nan
        at = np.nonzero(row[first:end] == r)[0]
        stats[:, at] = table[:, slot[first + at]]
    quiet = np.nan_to_num(stats[4]) > 0
    return Baselines(stats[0], stats[1], stats[2], stats[3], quiet)


def _row_percentiles(rows: Floats, pcts: list[float]) -> Floats:
    """Percentiles of the values of each row of `rows` other than NaN (numpy's linear
    interpolation between ranks), one row of the result per percentile; NaN for a row without
    any. All rows at once: the per-row calls of np.percentile made the backtest crawl."""
    grid = np.sort(rows, axis=1)  # NaN last
    counts = np.count_nonzero(~np.isnan(rows), axis=1)
    out = np.full((len(pcts), rows.shape[0]), np.nan)
    has = counts > 0
    arange = np.arange(rows.shape[0])[has]
    for p, pct in enumerate(pcts):
        position = (counts[has] - 1) * pct / 100.0
        lower = np.floor(position).astype(int)
        upper = np.minimum(lower + 1, counts[has] - 1)
        a, b = grid[arange, lower], grid[arange, upper]
        out[p, has] = a + (b - a) * (position - lower)
    return out


def _runs(mask: Bools) -> list[tuple[int, int]]:
    """(first, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True))


def _excess_event(
    kind: Kind, kw: Floats, per_h: int, b: Baselines, first: int, a: int, z: int
) -> Event:
    """Slots first+a..first+z-1 as an event over the hours they fall in, with their energy
    and what was expected of them, scored by their mean excess over expected in spreads."""
    actual = kw[first + a : first + z]
    expected = b.expected[a:z]
    score = float(np.mean((actual - expected) / b.spread[a:z]))
    return Event(
        kind,
        (first + a) // per_h,
        -(-(first + z) // per_h),
        float(actual.sum()) / per_h,
        float(expected.sum()) / per_h,
        score,
    )


def excess_events(kw: Floats, per_h: int, b: Baselines, first: int, margin: Floats) -> list[Event]:
    """Stuck-on loads, spikes and unusual hours among slots first..first+len(b)-1; a spike
    at least `margin` above the highest of its time of day."""
    used = kw[first : first + b.expected.size]
    with np.errstate(invalid="ignore"):
        stuck = used - b.low >= STUCK_KW
        spike = used - b.top >= margin
    events = []
    for a, e in _runs(stuck):
        if e - a >= STUCK_H * per_h:
            events.append(_excess_event("stuck_on", kw, per_h, b, first, a, e))
            spike[a:e] = False
    for a, e in _runs(spike & ~b.quiet):
        events.append(_excess_event("spike", kw, per_h, b, first, a, e))
    for a, e in _runs(spike & b.quiet):
        events.append(_excess_event("unusual_hour", kw, per_h, b, first, a, e))
    return events


def silence_events(kwh: Floats, first: int, end: int) -> list[Event]:
    """Runs of at least SILENCE_H hours without data that start in first..end-1 after a week
    mostly recorded. Expected: what the week before used in the same number of hours."""
    events = []
    for a, e in _runs(np.isnan(kwh[first:end])):
        a, e = a + first, e + first
        if e - a < SILENCE_H:
            continue
        week = kwh[max(0, a - 7 * 24) : a]
        if week.size < 7 * 24 or np.count_nonzero(~np.isnan(week)) < SILENCE_SEEN * week.size:
            continue
        expected = float(np.nanmean(week)) * (e - a)
        events.append(Event("silence", int(a), int(e), 0.0, expected, (e - a) / SILENCE_H))
    return events


def step_events(kwh: Floats, cal: Calendar, first: int, end: int) -> list[Event]:
    """Baseload steps up among the whole local days in first..end-1: runs of STEP_DAYS or more
    days whose always-on level stood above that of the four weeks before each."""
    lo = max(0, first - HISTORY_DAYS * 24)
    days = days_of(kwh[lo:end], cal.slice(lo, end))
    index = cal.day[lo:end] - days.first
    n = days.kwh.size
    level = np.full(n, np.nan)
    bounds = np.searchsorted(index, np.arange(n + 1)) + lo  # index never decreases
    for d in range(n):
        if bounds[d + 1] - bounds[d] < 23 or np.isnan(days.kwh[d]):  # whole, recorded days
            continue
        values = kwh[bounds[d] : bounds[d + 1]]
        level[d] = np.percentile(values[~np.isnan(values)], BASE_PERCENTILE)
    flagged = np.zeros(n, dtype=bool)
    ref = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    for d in range(HISTORY_DAYS // 2, n):
        past = level[max(0, d - HISTORY_DAYS) : d]
        past = past[~np.isnan(past)]
        if past.size < HISTORY_DAYS // 2 or np.isnan(level[d]):
            continue
        ref[d] = np.median(past)
        spread[d] = max(_mad_sigma(past), MIN_SPREAD_KW)
        flagged[d] = level[d] - ref[d] >= max(STEP_KWH, STEP_Z * spread[d])
    events = []
    first_day = cal.day[first] - days.first
    for a, e in _runs(flagged):
        if e - a < STEP_DAYS or e <= first_day:
            continue
        span = np.nonzero((index >= a) & (index < e))[0] + lo
        n_hours = span.size
        excess = level[a:e] - ref[a]
        score = float(np.mean(excess) / spread[a])
        events.append(
            Event(
                "baseload_step",
                int(span[0]),
                int(span[-1]) + 1,
                float(np.mean(level[a:e])) * n_hours,
                float(ref[a]) * n_hours,
                score,
            )
        )
    return events


def detect(
    kwh: Floats, cal: Calendar, first: int, end: int, quarters: Floats | None = None
) -> list[Event]:
    """Every anomaly among hours first..end-1 of the series, judged only from the hours before
    each (and the day of each), oldest first. With `quarters` (kWh of each quarter hour of the
    series, 4 an hour), stuck-on loads, spikes and unusual hours are judged in them."""
    if end <= first:
        return []
    per_h = 1 if quarters is None else QUARTERS_PER_H
    kw = kwh if quarters is None else quarters * QUARTERS_PER_H
    lo = max(0, first - CALIBRATION_DAYS * 24)
    b = baselines(kw, per_h, cal, first * per_h, end * per_h)
    top = np.concatenate([_tops(kw, per_h, cal, lo * per_h, first * per_h), b.top])
    margin = spike_margins(kw, per_h, cal, top, lo, first, end)
    events = excess_events(kw, per_h, b, first * per_h, margin)
    events += silence_events(kwh, first, end)
    events += step_events(kwh, cal, first, end)
    return sorted(events, key=lambda e: (e.first, e.kind))


# A slot is judged from the four weeks before its day, against the excesses of the eight weeks
# before it (each judged from the four weeks before its own day), and a baseload step from the
# four weeks of days before it: this many hours of history before the first hour judged.
HISTORY_H = (HISTORY_DAYS + CALIBRATION_DAYS) * 24
# `hour_scores` looks for anomalies from this many hours before the first it scores, so that a
# load on since before it is found as the run it is (a stuck-on load needs STUCK_H hours): the
# history it needs is SCORES_HISTORY_H.
SCORES_LOOKBACK_H = 24
SCORES_HISTORY_H = HISTORY_H + SCORES_LOOKBACK_H


def hour_scores(kwh: Floats, cal: Calendar, first: int, quarters: Floats | None = None) -> Floats:
    """For each hour first..len-1, the highest score of the anomalies covering it, 0 where none
    does (NaN: none before `first`), the anomalies found among the hours from SCORES_LOOKBACK_H
    before `first` on. What an alert rule on anomalies judges, hour by hour, as the detector
    found them."""
    scores = np.full(kwh.size, np.nan)
    scores[first:] = 0.0
    for e in detect(kwh, cal, max(0, first - SCORES_LOOKBACK_H), kwh.size, quarters):
        if e.end > first:
            span = slice(max(e.first, first), e.end)
            scores[span] = np.maximum(scores[span], e.score)
    return scores
