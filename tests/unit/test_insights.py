"""The insight math (services/insights/analysis.py), each expected number worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from energy_tracker.services.insights.analysis import (
    Day,
    DayAnomaly,
    DeviceShare,
    DeviceTotal,
    Hour,
    Total,
    baseload,
    day_anomalies,
    month_comparison,
    percentile,
    previous_month_start,
    robust_baseline,
    top_devices,
)

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
approx = pytest.approx


def days_of(values: dict[date, float], price: float = 0.25) -> list[Day]:
    return [Day(d, kwh, kwh * price) for d, kwh in values.items()]


# -- helpers -----------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    # 5 values: the 10th percentile sits at rank (5 - 1) x 0.1 = 0.4, 40% of the way from 10 to
    # 20: 14; the median at rank 2: 30.
    assert percentile([50, 10, 40, 20, 30], 10) == approx(14.0)
    assert percentile([50, 10, 40, 20, 30], 50) == 30.0
    assert percentile([7.0], 10) == 7.0


def test_robust_baseline_scales_the_mad_with_floors() -> None:
    # Median 3; distances 2, 1, 0, 1, 97 have median 1: scale 1.4826 x 1 (the 100 moves nothing).
    assert robust_baseline([1, 2, 3, 4, 100], 0.1) == (3, approx(1.4826))
    # A flat history: MAD 0, so the scale is 5% of the median (0.25) ...
    assert robust_baseline([5, 5, 5, 5], 0.1) == (5, approx(0.25))
    # ... or the absolute floor when that is larger (5% of 0 is 0).
    assert robust_baseline([0, 0, 0], 0.1) == (0, 0.1)


def test_previous_month_crosses_the_year() -> None:
    assert previous_month_start(date(2026, 1, 15)) == date(2025, 12, 1)
    assert previous_month_start(date(2026, 3, 31)) == date(2026, 2, 1)


# -- baseload ----------------------------------------------------------------------------------


def test_baseload_is_the_tenth_percentile_of_hourly_power() -> None:
    # Six hours: 0.1 and 0.2 kWh at night at 0.20 a kWh, then 0.5, 0.5, 1.0, 2.0 kWh at 0.40.
    start = datetime(2026, 3, 2, 0, tzinfo=UTC)
    kwh_and_price = [(0.1, 0.2), (0.2, 0.2), (0.5, 0.4), (0.5, 0.4), (1.0, 0.4), (2.0, 0.4)]
    hours = [
        Hour(start + timedelta(hours=i), kwh, kwh * price)
        for i, (kwh, price) in enumerate(kwh_and_price)
    ]
    base = baseload(hours)
    assert base is not None
    # Average powers 100, 200, 500, 500, 1000, 2000 W; rank (6 - 1) x 0.1 = 0.5: 150 W.
    assert base.power_w == approx(150.0)
    # 150 W x 8,760 h = 1,314 kWh a year.
    assert base.yearly_kwh == approx(1314.0)
    # The plain mean of the six hours' prices: (2 x 0.20 + 4 x 0.40) / 6 = 1/3 a kWh, so
    # 1,314 / 3 = 438.0 (the usage-weighted 1.66 / 4.3 would overstate an always-on load).
    assert base.yearly_cost == approx(438.0)
    # 150 W over the 6 hours is 0.9 kWh of the 4.3 used: 20.930%.
    assert base.share_pct == approx(0.9 / 4.3 * 100)
    assert base.hours == 6


def test_baseload_without_use_or_hours() -> None:
    assert baseload([]) is None
    idle = baseload([Hour(datetime(2026, 3, 2, h, tzinfo=UTC), 0.0, 0.0) for h in range(3)])
    assert idle is not None
    # Nothing used: 0 W, and no price or share to go by.
    assert (idle.power_w, idle.yearly_kwh, idle.yearly_cost, idle.share_pct) == (0, 0, None, None)


# -- months ------------------------------------------------------------------------------------


def test_month_comparison_compares_like_with_like() -> None:
    values = {date(2026, 2, 1): 10.0, date(2026, 2, 2): 10.0}  # 3 February has no data
    values |= {date(2026, 2, d): 8.0 for d in range(4, 29)}
    values |= {
        date(2026, 3, 1): 12.0,
        date(2026, 3, 2): 11.0,
        date(2026, 3, 3): 9.0,
        date(2026, 3, 4): 2.0,  # today, not over
    }
    result = month_comparison(days_of(values, price=0.3), date(2026, 3, 4))
    # So far: 12 + 11 + 9 + 2 = 34 kWh over 4 days, at 0.3 a kWh: 10.2.
    assert result.month_to_date == Total(date(2026, 3, 1), approx(34.0), approx(10.2), 4)
    # February: 10 + 10 + 25 days x 8 = 220 kWh over 27 days: 66.0.
    assert result.last_month == Total(date(2026, 2, 1), approx(220.0), approx(66.0), 27)
    # Full days of March: the 1st to 3rd; February has the 1st and 2nd of them: 12 + 11 = 23
    # against 10 + 10 = 20: +15%.
    assert result.change_pct == approx(15.0)


def test_month_comparison_on_the_first_and_without_history() -> None:
    first = month_comparison(days_of({date(2026, 3, 1): 4.0}), date(2026, 3, 1))
    assert first.month_to_date == Total(date(2026, 3, 1), 4.0, 1.0, 1)
    assert (first.last_month, first.change_pct) == (None, None)  # no full day to compare yet
    empty = month_comparison([], date(2026, 3, 4))
    assert (empty.month_to_date, empty.last_month, empty.change_pct) == (None, None, None)


def test_day_anomalies_against_the_28_days_before() -> None:
    # February cycles 9, 10, 11 kWh (the 1st is 9): ten 9s, nine 10s, nine 11s. Median 10;
    # distances: nineteen 1s and nine 0s, median 1, so the scale is 1.4826.
    values = {date(2026, 2, d): [9.0, 10.0, 11.0][(d - 1) % 3] for d in range(1, 29)}
    values |= {
        date(2026, 3, 1): 15.0,  # (15 - 10) / 1.4826 = +3.372: high
        # Its 28 days drop 1 Feb (a 9) and take the 15: still median 10, MAD 1.
        date(2026, 3, 2): 5.0,  # (5 - 10) / 1.4826 = -3.372: low
        # Drop 2 Feb (a 10), take the 5: sorted 5, nine 9s, eight 10s, ...: median 10, MAD 1.
        date(2026, 3, 3): 12.0,  # +1.349: ordinary
        date(2026, 3, 4): 100.0,  # today: not over, not judged
    }
    result = day_anomalies(days_of(values), date(2026, 3, 1), date(2026, 3, 4))
    assert result == [
        DayAnomaly(date(2026, 3, 1), 15.0, 10.0, approx(5 / 1.4826), "high"),
        DayAnomaly(date(2026, 3, 2), 5.0, 10.0, approx(-5 / 1.4826), "low"),
    ]


def test_day_anomalies_need_seven_earlier_days() -> None:
    values = {date(2026, 1, d): 1.0 for d in range(1, 7)}
    values |= {date(2026, 1, 7): 50.0, date(2026, 1, 8): 50.0}
    result = day_anomalies(days_of(values), date(2026, 1, 1), date(2026, 1, 9))
    # The 7th has six days before it: not judged. The 8th has seven (six 1s and a 50): median
    # 1, MAD 0, 5% of 1 is 0.05, so the 0.1 kWh floor holds: (50 - 1) / 0.1 = 490.
    assert result == [DayAnomaly(date(2026, 1, 8), 50.0, 1.0, approx(490.0), "high")]


# -- devices -----------------------------------------------------------------------------------


def test_top_devices_share_what_was_used() -> None:
    totals = [
        DeviceTotal("tv", "TV", 5.0, 1.5),
        DeviceTotal("meter", "Meter", 60.0, 18.0),
        DeviceTotal("solar", "Roof", -20.0, -1.6),  # exported: not a user
        DeviceTotal("fridge", "Fridge", 0.0, 0.0),  # silent: not a user
        DeviceTotal("kettle", "Kettle", 15.0, 4.5),
    ]
    # Used: 60 + 15 + 5 = 80 kWh: 75%, 18.75%, 6.25%.
    assert top_devices(totals) == [
        DeviceShare("meter", "Meter", 60.0, 18.0, approx(75.0)),
        DeviceShare("kettle", "Kettle", 15.0, 4.5, approx(18.75)),
        DeviceShare("tv", "TV", 5.0, 1.5, approx(6.25)),
    ]
    assert [s.device_id for s in top_devices(totals, limit=2)] == ["meter", "kettle"]
    assert top_devices([]) == []
