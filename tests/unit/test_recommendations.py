"""Recommendations (services/insights/recommendations.py), each saving worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from energy_tracker.services.insights.analysis import Day, Hour
from energy_tracker.services.insights.recommendations import (
    Recommendation,
    always_on,
    device_increase,
    shift_load,
)

UTC = ZoneInfo("UTC")
approx = pytest.approx
START = datetime(2026, 3, 2, tzinfo=UTC)


def hours(days: int, kwh_at: dict[int, float], price_at: dict[int, float]) -> list[Hour]:
    """`days` days of hours: kwh_at[hour] (default 0.1) at price_at[hour] (default 0.30)."""
    out = []
    for i in range(days * 24):
        kwh = kwh_at.get(i % 24, 0.1)
        out.append(Hour(START + timedelta(hours=i), kwh, kwh * price_at.get(i % 24, 0.30)))
    return out


def test_shift_the_evening_load_to_the_cheapest_hour() -> None:
    # Seven days: 0.1 kWh an hour, 2.1 at 18:00; a tariff of 0.30, 0.40 from 17:00 to 20:00 and
    # 0.18 from 00:00 to 07:00. Always-on level: the 10th percentile of the hours, 0.1. At
    # 18:00 the median load above it is 2.0 kWh at 0.40; the cheapest hour is 00:00 (0.18, the
    # earliest of seven): 2.0 x (0.40 - 0.18) x 30 days = 13.20 a month. Every other hour moves
    # 0 kWh above the always-on level: nothing.
    tou = {h: 0.40 for h in (17, 18, 19)} | {h: 0.18 for h in range(7)}
    result = shift_load(hours(7, {18: 2.1}, tou))
    assert result == Recommendation("shift_load", None, 18, 0, approx(2.0), 0.0, approx(13.2))


def test_no_shift_under_a_flat_tariff() -> None:
    assert shift_load(hours(7, {18: 2.1}, {})) is None
    assert shift_load([]) is None


def test_an_always_on_load_above_the_usual_level() -> None:
    # Earlier: 0.1 kWh every hour (100 W always on); recently 0.16 (160 W) with 1.1 at 18:00:
    # the 10th percentile of the recent hours is 160 W, 60 W above usual (and more than 10 %
    # of it). 0.06 kW x 24 h x 30 days = 43.2 kWh a month, at the plain mean price 0.30: 12.96.
    earlier = hours(14, {}, {})
    recent = hours(7, {h: 0.16 for h in range(24)} | {18: 1.1}, {})
    assert always_on(recent, earlier) == Recommendation(
        "always_on", None, None, None, approx(60.0), approx(43.2), approx(12.96)
    )
    # 20 W more is within the usual.
    assert always_on(hours(7, {h: 0.12 for h in range(24)}, {}), earlier) is None


def test_a_device_that_started_using_more() -> None:
    # 28 days of 2.0 kWh, then 14 days of 3.0 at 0.25 a kWh: 1.0 kWh a day more (50 %), 30 kWh a
    # month, 7.50.
    earlier = [Day(date(2026, 2, 1) + timedelta(days=d), 2.0, 0.5) for d in range(28)]
    recent = [Day(date(2026, 3, 1) + timedelta(days=d), 3.0, 0.75) for d in range(14)]
    assert device_increase("fridge", recent, earlier) == Recommendation(
        "device_increase", "fridge", None, None, approx(1.0), approx(30.0), approx(7.5)
    )
    # 2.2 a day is 10 % more: not news.
    steady = [Day(d.day, 2.2, 0.55) for d in recent]
    assert device_increase("fridge", steady, earlier) is None
    assert device_increase("fridge", recent, []) is None
