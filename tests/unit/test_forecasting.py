"""The estimators of services/insights/forecasting.py on small series, expected values by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

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


def test_profile_is_the_mean_of_the_weekly_and_the_day_kind_medians() -> None:
    # Three weeks of 1 kWh an hour, but the hours at 08:00 of the three Mondays were 5, 3 and 9.
    hours = 21 * 24
    kwh = np.ones(hours + 24)
    kwh[hours:] = np.nan
    for week, value in enumerate([5.0, 3.0, 9.0]):
        kwh[week * 168 + 8] = value
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    pred = fc.profile_hours(kwh, cal, hours, 24)  # the fourth Monday
    # 08:00: the same hour of the week over the weeks before: median(5, 3, 9) = 5; the same hour
    # of the last 21 days of its kind (15 working days): 12 ones and the three Mondays (5, 3, 9),
    # median of 15 sorted values, the 8th: 1. Mean (5 + 1) / 2 = 3.
    assert pred[8] == approx(3.0)
    assert pred[9] == approx(1.0)


def test_the_last_hour_pulls_the_next_ones() -> None:
    # A flat 1 kWh for two weeks, then the last hour at 3: 2 above its profile of 1. The next
    # hours get 2 x 0.6 = 1.2, 2 x 0.36 = 0.72 on top.
    kwh = np.ones(14 * 24 + 2)
    kwh[14 * 24 - 1] = 3.0
    kwh[14 * 24 :] = np.nan
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    f = fc.forecast_hours(kwh, cal, 14 * 24, 2)
    assert f.method == "profile"
    # The profile of the last hour (13 x 1 and the 3 itself is after its origin): 1.
    assert list(f.kwh) == approx([1 + 1.2, 1 + 0.72])


def test_interval_from_the_percentiles_of_its_own_errors() -> None:
    # Four weeks of errors, 0 but +1 at 12:00 on ten days and -0.5 at 02:00 on all 28 days. At
    # 12:00 the sample is the 84 errors at 11:00-13:00: 74 zeros and 10 ones; the 90th percentile
    # sits at rank 0.9 x 83 = 74.7, among the ones: 1; the 10th at 0. At 03:00 the sample
    # (02:00-04:00) is 28 x -0.5 and 56 zeros: 10th percentile at rank 8.3: -0.5; 90th: 0.
    days = 42
    kwh = np.ones(days * 24 + 24)
    kwh[days * 24 :] = np.nan
    cal = hourly.calendar_of(MONDAY, kwh.size, UTC, None)
    errors = np.zeros(28 * 24)
    errors[np.arange(10) * 24 + 12] = 1.0
    errors[np.arange(28) * 24 + 2] = -0.5
    f = fc.forecast_hours(kwh, cal, days * 24, 24, errors)
    assert (f.low[12], f.kwh[12], f.high[12]) == approx((1.0, 1.0, 2.0))
    assert (f.low[3], f.kwh[3], f.high[3]) == approx((0.5, 1.0, 1.0))
    assert (f.low[8], f.high[8]) == approx((1.0, 1.0))
    # Computed from the series, the errors of a flat history are all 0.
    assert not fc.hour_errors(kwh, cal, days * 24).any()


def test_no_history_says_none() -> None:
    kwh = np.full(48, np.nan)
    f = fc.forecast_hours(kwh, hourly.calendar_of(MONDAY, 48, UTC, None), 24, 24)
    assert f.method == "none" and np.isnan(f.kwh).all()


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
