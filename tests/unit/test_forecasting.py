"""The estimators of services/insights/forecasting.py on small series, expected values by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from energy_tracker.core import hours as hourly
from energy_tracker.services.insights import forecasting as fc

approx = pytest.approx
# Monday 2 March 2026, 00:00 UTC.
MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())


def test_calendar_marks_weekends_and_public_holidays() -> None:
    # 1 May 2026 is a Friday and Labour Day in France, not a holiday without a country.
    start = int(datetime(2026, 4, 30, 23, tzinfo=UTC).timestamp())
    cal = hourly.calendar_of(start, 3 * 24, UTC, "FR")
    assert [int(cal.hour[i]) for i in (0, 1, 25)] == [23, 0, 0]
    assert date.fromordinal(int(cal.day[1])) == date(2026, 5, 1)
    # 30 April (Thursday) works; 1 May is off; 2 May is a Saturday.
    assert [bool(cal.off[i]) for i in (0, 1, 25, 49)] == [False, True, True, True]
    assert not hourly.calendar_of(start, 3 * 24, UTC, None).off[1]


def test_the_hour_estimators_by_hand() -> None:
    # Three weeks of 1 kWh an hour, but the hours at 08:00 of the three Mondays were 5, 3 and 9.
    hours = 21 * 24
    kwh = np.ones(hours + 24)
    kwh[hours:] = np.nan
    for week, value in enumerate([5.0, 3.0, 9.0]):
        kwh[week * 168 + 8] = value
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    pooled, last7, kind, week = fc.hour_candidates(kwh, cal, hours, 24)  # the fourth Monday
    # 08:00. The same hour of the week: median(9, 3, 5) = 5. The last 7 days: six 1s and the
    # Monday a week back, 9: 1. The last 28 days of its kind (working days; 21 days exist): 12
    # ones and 9, 3, 5: the 8th of 15 sorted values, 1. Pooled: the three Mondays (7, 14 and 21
    # days back) twice, as weeks and as working days, and the 12 ones 3-6, 10-13 and 17-20 days
    # back, weights 2^(-days/21): the ones weigh 8.36 of 12.21, over half: 1.
    assert (pooled[8], last7[8], kind[8], week[8]) == approx((1.0, 1.0, 1.0, 5.0))
    assert (pooled[9], last7[9], kind[9], week[9]) == approx((1.0, 1.0, 1.0, 1.0))
    assert fc.hour_candidates(kwh, cal, hours, 24).shape == (len(fc.HOUR_ESTIMATORS), 24)


def test_the_same_local_hour_across_a_dst_change() -> None:
    # Paris went to summer time on Sunday 29 March 2026 (02:00 became 03:00): that day has 23
    # hours. Each hour's kWh is its local hour of the day; a forecast of Monday 30 March 08:00
    # (local) reads 08:00 of the days before, not the hour 24 h earlier in UTC.
    paris = ZoneInfo("Europe/Paris")
    start = int(datetime(2026, 3, 23, tzinfo=paris).timestamp())
    cal = hourly.calendar_of(start, 8 * 24, paris, None)
    kwh = cal.hour.astype(float)
    origin = int(np.nonzero(cal.day == date(2026, 3, 30).toordinal())[0][0])
    kwh[origin:] = np.nan
    _pooled, last7, kind, _week = fc.hour_candidates(kwh, cal, origin, 24)
    assert last7[8] == 8.0 and kind[8] == 8.0


def test_the_blend_weighs_each_estimator_by_its_recent_errors() -> None:
    # Actual 1, 1, 1, 1. Estimator A said 1, 1, 1, 3 (mean absolute error 0.5), B 2 throughout
    # (1), C nothing (the worst of the others': 1). Weights 0.5^-8 = 256, 1, 1, over 258.
    actual = np.ones(4)
    past = np.array([[1.0, 1.0, 1.0, 3.0], [2.0] * 4, [np.nan] * 4])
    weights = fc.blend_weights(actual, past)
    assert list(weights) == approx([256 / 258, 1 / 258, 1 / 258])
    # A column where B has nothing: A and C, (256 x 4 + 1 x 2) / 257.
    column = np.array([[4.0], [np.nan], [2.0]])
    assert fc.blend(column, weights)[0] == approx((256 * 4 + 2) / 257)
    assert np.isnan(fc.blend(np.full((3, 1), np.nan), weights)[0])


def test_the_interval_is_split_conformal() -> None:
    # 19 errors 1..19: the floor(20 x 0.1) = 2nd and the ceil(20 x 0.9) = 18th.
    assert fc.interval(np.arange(1.0, 20.0)) == (2.0, 18.0)
    # 20 errors: 16 zeros, two -1 and two +1. The 80 % band, the 2nd and 19th (-1, 1), holds 18
    # by its ranks; narrower, at 70 % (the 3rd and 18th), it is (0, 0) and still holds 16...
    # fewer than 18: the 80 % band stays.
    e = np.array([0.0] * 16 + [-1.0, -1.0, 1.0, 1.0])
    assert fc.interval(e) == (-1.0, 1.0)
    # 84 errors, 74 zeros and 10 ones (a sub-meter idle most hours): the 80 % band is the 8th
    # and the 77th, (0, 1), 70 by its ranks; (0, 0) holds 74 of them: that one.
    e = np.array([0.0] * 74 + [1.0] * 10)
    assert fc.interval(e) == (0.0, 0.0)


def test_hour_interval_from_the_errors_at_the_same_hour() -> None:
    # Six weeks of 1 kWh an hour: every estimator says 1. Over the last four weeks they had
    # said 1 + k/100 at 12:00 of the k-th day (k = 0..27) and 1 elsewhere. The sample at 12:00
    # (11:00-13:00, 84 errors): 57 zeros (k = 0, and 11:00 and 13:00) and -0.01..-0.27. The 80 %
    # band's ranks, the 8th (-0.20) and the 77th (0), hold 70 errors. Narrower, with ties at 0:
    # at 65 % the 14th smallest (floor(85 x 0.175)), -0.14, and 0 still hold 14 + 57 = 71; at 60 %
    # the 17th, -0.11, would hold 68: 1 - 0.14 to 1. At 03:00 every error is 0: the point.
    days = 42
    kwh = np.ones(days * 24 + 24)
    kwh[days * 24 :] = np.nan
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    past = np.ones((len(fc.HOUR_ESTIMATORS), 28 * 24))
    past[:, np.arange(28) * 24 + 12] += np.arange(28) / 100
    f = fc.forecast_hours(kwh, cal, days * 24, 24, past)
    assert f.method == "profile"
    assert (f.low[12], f.kwh[12], f.high[12]) == approx((0.86, 1.0, 1.0))
    assert (f.low[3], f.kwh[3], f.high[3]) == approx((1.0, 1.0, 1.0))
    # Computed from the series, a flat history's estimators are all 1: no error.
    assert not (fc.day_ahead_candidates(kwh, cal, 14 * 24, days * 24) - 1).any()


def test_a_cold_start_uses_the_days_it_has_and_says_so() -> None:
    # Three days, each hour's kWh its hour of the day / 10. No week back yet: the hour of the
    # week has nothing and weighs least; the others repeat the days seen, with no error.
    kwh = np.concatenate([np.tile(np.arange(24) / 10, 3), np.full(24, np.nan)])
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    f = fc.forecast_hours(kwh, cal, 72, 24)
    assert f.method == "recent-days"
    assert list(f.kwh) == approx(list(np.arange(24) / 10))
    assert list(f.low) == approx(list(f.kwh)) and list(f.high) == approx(list(f.kwh))
    assert set(f.weights) == set(fc.HOUR_ESTIMATORS)
    assert f.weights["hour-of-week"] == min(f.weights.values())


def test_history_older_than_every_window_still_forecasts() -> None:
    # Two Sundays of 24 kWh five and six weeks back (hours of 1 kWh), nothing since: no
    # estimator's window holds a working day, yet the forecast says what the history says
    # (the median hour, 1 kWh; the median day, 24 kWh) rather than nothing.
    days_n = 7 * 7
    kwh = np.full(days_n * 24, np.nan)
    for sunday in (6, 13):
        kwh[sunday * 24 : (sunday + 1) * 24] = 1.0
    cal = hourly.calendar_of(MONDAY, kwh.size + 48, UTC, None)
    f = fc.forecast_hours(np.concatenate([kwh, np.full(48, np.nan)]), cal, kwh.size, 48)
    assert list(f.kwh) == approx([1.0] * 48)
    assert list(f.low) == approx([1.0] * 48) and list(f.high) == approx([1.0] * 48)
    daily = np.full(days_n + 7, np.nan)
    daily[[6, 13]] = 24.0
    off = np.array(([False] * 5 + [True] * 2) * 8)
    d = fc.forecast_days(hourly.DaySeries(date(2026, 3, 2).toordinal(), daily, off), days_n, 7)
    assert list(d.kwh) == approx([24.0] * 7)
    assert not np.isnan(d.low).any() and not np.isnan(d.high).any()


def test_no_history_says_none() -> None:
    kwh = np.full(48, np.nan)
    f = fc.forecast_hours(kwh, hourly.calendar_of(MONDAY, 48, UTC, None), 24, 24)
    assert f.method == "none" and np.isnan(f.kwh).all() and f.weights == {}


def test_days_sum_their_hours_and_fill_a_few_missing() -> None:
    # Day 1: 24 hours of 0.5 = 12; day 2: 21 hours of 1 recorded, filled to 24; day 3: only 10.
    kwh = np.concatenate([np.full(24, 0.5), np.ones(24), np.ones(24)])
    kwh[24:27] = np.nan
    kwh[48 + 10 :] = np.nan
    days = hourly.days_of(kwh, hourly.calendar_of(MONDAY, kwh.size, UTC, None))
    assert days.kwh[:2] == approx([12.0, 24.0])
    assert np.isnan(days.kwh[2])


def test_day_level_weighs_recent_days_and_their_kind() -> None:
    # Two days known before the origin (a Monday, index 7): Saturday 10 (age 1), Sunday 20
    # (age 0): weights 2^-1/4 = 0.8409 and 1. Level (8.409 + 20) / 1.8409 = 15.432. A working
    # Monday has no day of its kind: the level. A Saturday's kind (10 and 20, the same weights)
    # is the level too, so it is the level as well.
    kwh = np.full(14, np.nan)
    kwh[5], kwh[6] = 10.0, 20.0
    off = np.array([False] * 5 + [True] * 2 + [False] * 5 + [True] * 2)
    days = hourly.DaySeries(date(2026, 3, 2).toordinal(), kwh, off)
    w = 2**-0.25
    level = (10 * w + 20) / (w + 1)
    assert fc.level_days(days, 7, 6) == approx([level] * 6)


def test_day_level_halfway_to_its_kind() -> None:
    # Monday to Sunday: five working days of 10, a weekend of 20 and 20, origin the next Monday.
    # Ages 6..0; weights 2^(-age/4). Working days weigh w6..w2, weekend w1 and w0.
    kwh = np.array([10.0] * 5 + [20.0] * 2 + [np.nan] * 7)
    off = np.array(([False] * 5 + [True] * 2) * 2)
    days = hourly.DaySeries(date(2026, 3, 2).toordinal(), kwh, off)
    w = [2 ** (-age / 4) for age in range(7)]
    level = (10 * sum(w[2:]) + 20 * sum(w[:2])) / sum(w)
    monday, saturday = fc.level_days(days, 7, 6)[[0, 5]]
    assert monday == approx((level + 10) / 2)
    assert saturday == approx((level + 20) / 2)


def test_the_day_estimators_by_hand() -> None:
    # Two weeks from a Monday: working days 10 kWh, weekend days 20, but the second Wednesday 40.
    kwh = np.array(([10.0] * 5 + [20.0] * 2) * 2 + [np.nan] * 7)
    kwh[9] = 40.0
    off = np.array(([False] * 5 + [True] * 2) * 3)
    days = hourly.DaySeries(date(2026, 3, 2).toordinal(), kwh, off)
    level, kind, weekday = fc.day_candidates(days, 14, 7)
    # Days of the same kind: nine 10s and the 40 (the 10s weigh most), or four 20s.
    assert list(kind) == approx([10.0] * 5 + [20.0] * 2)
    # The same weekday over the weeks before: Wednesday median(40, 10) = 25.
    assert list(weekday) == approx([10.0, 10.0, 25.0, 10.0, 10.0, 20.0, 20.0])
    assert list(level) == approx(list(fc.level_days(days, 14, 7)))


def test_the_days_blend_follows_the_estimator_that_was_right() -> None:
    # Ten weeks of the same week: Monday 10, Tuesday 20, ... Friday 50, weekend 5 and 5. The
    # weekday median made no error, the level and the day-kind median did: it gets the weight,
    # and the interval of a blend that never erred is the point.
    week = [10.0, 20.0, 30.0, 40.0, 50.0, 5.0, 5.0]
    kwh = np.array(week * 10 + [np.nan] * 7)
    off = np.array(([False] * 5 + [True] * 2) * 11)
    days = hourly.DaySeries(date(2026, 1, 5).toordinal(), kwh, off)
    f = fc.forecast_days(days, 70, 7)
    assert f.method == "profile"
    assert list(f.kwh) == approx(week)
    assert list(f.low) == approx(week) and list(f.high) == approx(week)


def test_month_projection_halves_the_level_and_the_months_rate() -> None:
    # 30 days of 10 kWh in March 2026 (from 1 March), origin the 11th (index 10) at midnight:
    # 100 so far over 10 days. 21 days left, level 10: rest 0.5 x 210 + 0.5 x 10 x 21 = 210.
    # The level's errors are all 0: no range.
    kwh = np.array([10.0] * 31)
    days = hourly.DaySeries(date(2026, 3, 1).toordinal(), kwh, np.zeros(31, dtype=bool))
    p = fc.project_month(days, 10, 100.0)
    assert (p.kwh, p.low, p.high, p.remaining_days) == approx((310.0, 310.0, 310.0, 21.0))
    # Half of today left and 105 used: the level gives 0.5 x 10 + 20 x 10 = 205; the month's rate
    # 105 / 10.5 = 10 a day for 20.5 days = 205; rest 205.
    p = fc.project_month(days, 10, 105.0, today_left=0.5)
    assert (p.kwh, p.remaining_days) == approx((310.0, 20.5))
