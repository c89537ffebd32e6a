"""The energy math, with every expected number worked out by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from energy_tracker.core.energy import (
    COUNTER_SPREAD_MS,
    period_end,
    period_start,
    period_starts,
    prices_at,
    quarter_buckets,
    rollup,
)
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity

BERLIN = ZoneInfo("Europe/Berlin")
MAX_GAP = 15 * 60 * 1000


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def power_series(device: str, start: int, end: int, step_s: int, watts: float) -> list[Reading]:
    return [Reading(device, t, power_w=watts) for t in range(start, end + 1, step_s * 1000)]


def test_constant_power_over_a_utc_hour() -> None:
    # 1,200 W from 10:00 to 11:00, a sample every 10 s (361 samples): 1.2 kW x 1 h = 1,200 Wh,
    # 300 Wh in each quarter.
    h = ms("2026-03-02T10:00:00+00:00")
    readings = power_series("d", h, h + 3_600_000, 10, 1200.0)
    quarters = quarter_buckets("d", readings, h, h + 3_600_000, max_gap_ms=MAX_GAP)
    assert [round(q.energy_wh, 9) for q in quarters] == [300.0, 300.0, 300.0, 300.0]
    hour = rollup("d", Granularity.HOUR, h, quarters)
    assert round(hour.energy_wh, 9) == 1200.0
    assert hour.samples == 360  # the 11:00:00 sample belongs to the next hour
    assert hour.avg_power_w == 1200.0
    assert hour.max_power_w == 1200.0


def test_trapezoid_between_two_samples_split_in_proportion_to_time() -> None:
    # 1,000 W at 10:10 and 2,000 W at 10:20: (1000+2000)/2 W x 1/6 h = 250 Wh,
    # 5 min of the 10 in the first quarter (125 Wh), 5 min in the second (125 Wh).
    a, b = ms("2026-03-02T10:10:00+00:00"), ms("2026-03-02T10:20:00+00:00")
    q0 = ms("2026-03-02T10:00:00+00:00")
    readings = [Reading("d", a, power_w=1000.0), Reading("d", b, power_w=2000.0)]
    quarters = quarter_buckets("d", readings, q0, q0 + 30 * 60_000, max_gap_ms=MAX_GAP)
    assert [round(q.energy_wh, 9) for q in quarters] == [125.0, 125.0]


def test_gap_longer_than_max_gap_adds_no_energy() -> None:
    # 500 W at 10:00 and at 12:00 (a 2-hour gap): no energy is invented.
    a, b = ms("2026-03-02T10:00:00+00:00"), ms("2026-03-02T12:00:00+00:00")
    readings = [Reading("d", a, power_w=500.0), Reading("d", b, power_w=500.0)]
    quarters = quarter_buckets("d", readings, a, b + 15 * 60_000, max_gap_ms=MAX_GAP)
    assert sum(q.energy_wh for q in quarters) == 0.0
    assert sum(q.samples for q in quarters) == 2


def test_counter_reset_counts_new_value_from_zero() -> None:
    # Counter 1,000 -> 1,100 Wh (100 Wh), reset, then 30 Wh, then 80 Wh (+50): 180 Wh in total.
    q0 = ms("2026-03-02T10:00:00+00:00")
    readings = [
        Reading("d", q0 + 60_000, energy_wh=1000.0),
        Reading("d", q0 + 120_000, energy_wh=1100.0),
        Reading("d", q0 + 180_000, energy_wh=30.0),
        Reading("d", q0 + 240_000, energy_wh=80.0),
    ]
    quarters = quarter_buckets("d", readings, q0, q0 + 15 * 60_000, max_gap_ms=MAX_GAP)
    assert round(quarters[0].energy_wh, 9) == 180.0


def test_berlin_days_around_dst_have_23_and_25_hours() -> None:
    spring = period_start(ms("2026-03-29T12:00:00+02:00"), Granularity.DAY, BERLIN)
    assert spring == ms("2026-03-29T00:00:00+01:00")
    assert period_end(spring, Granularity.DAY, BERLIN) - spring == 23 * 3_600_000
    autumn = period_start(ms("2026-10-25T12:00:00+01:00"), Granularity.DAY, BERLIN)
    assert autumn == ms("2026-10-25T00:00:00+02:00")
    assert period_end(autumn, Granularity.DAY, BERLIN) - autumn == 25 * 3_600_000


def test_month_buckets_follow_local_time() -> None:
    # March 2026 in Berlin: 1 March 00:00 CET (UTC+1) to 1 April 00:00 CEST (UTC+2).
    start = period_start(ms("2026-03-15T00:00:00+00:00"), Granularity.MONTH, BERLIN)
    assert start == ms("2026-02-28T23:00:00+00:00")
    assert period_end(start, Granularity.MONTH, BERLIN) == ms("2026-03-31T22:00:00+00:00")
    dec = period_start(ms("2026-12-31T23:30:00+00:00"), Granularity.MONTH, UTC_ZONE)
    assert period_end(dec, Granularity.MONTH, UTC_ZONE) == ms("2027-01-01T00:00:00+00:00")


UTC_ZONE = ZoneInfo("UTC")


DAY = 86_400_000
QUARTER = 15 * 60 * 1000


def test_a_counter_gap_of_days_is_spread_over_the_day_it_closes() -> None:
    # A meter offline for three days: 0 Wh on 1 March at 12:00, 9,600 Wh on 4 March at 12:00.
    # The 9,600 Wh are real but when they were used is not known, so they go on the last 24 h
    # before the gap closes: 96 quarters of 9,600 / 96 = 100 Wh from 3 March 12:00, nothing
    # before. Besides those, only the two quarters holding a reading come back (a sample each).
    assert COUNTER_SPREAD_MS == DAY
    a = ms("2026-03-01T12:00:00+00:00")
    b = a + 3 * DAY
    readings = [Reading("d", a, energy_wh=0.0), Reading("d", b, energy_wh=9600.0)]
    quarters = quarter_buckets("d", readings, a, b + QUARTER, max_gap_ms=MAX_GAP)
    energy = [(q.start, round(q.energy_wh, 9)) for q in quarters if q.energy_wh]
    assert energy == [(b - DAY + i * QUARTER, 100.0) for i in range(96)]
    assert [(q.start, q.samples) for q in quarters if q.samples] == [(a, 1), (b, 1)]
    assert len(quarters) == 98


def test_a_counter_gap_of_a_day_or_less_is_spread_over_all_of_it() -> None:
    # 0 Wh at 00:00 and 2,400 Wh at 24:00 the same day: 100 Wh in every hour (25 Wh a quarter).
    a = ms("2026-03-01T00:00:00+00:00")
    readings = [Reading("d", a, energy_wh=0.0), Reading("d", a + DAY, energy_wh=2400.0)]
    quarters = quarter_buckets("d", readings, a, a + DAY, max_gap_ms=MAX_GAP)
    assert [round(q.energy_wh, 9) for q in quarters] == [25.0] * 96


def test_only_quarters_with_something_in_them_come_back() -> None:
    # Two power readings 399 days apart: no energy (a gap), a sample in each of two quarters;
    # the 38,000-odd empty quarters between them are not built.
    a = ms("2025-01-01T00:00:00+00:00")
    b = a + 399 * DAY
    readings = [Reading("d", a, power_w=100.0), Reading("d", b, power_w=100.0)]
    quarters = quarter_buckets("d", readings, a, b + QUARTER, max_gap_ms=MAX_GAP)
    assert [(q.start, q.samples, q.energy_wh) for q in quarters] == [(a, 1, 0.0), (b, 1, 0.0)]


def test_period_starts_lists_every_overlapping_bucket() -> None:
    h = ms("2026-03-02T10:00:00+00:00")
    assert period_starts(h + 1, h + 2 * 3_600_000, Granularity.HOUR) == [h, h + 3_600_000]


def test_time_of_use_prices_and_wrapping_band() -> None:
    tariff = {
        "type": "tou",
        "bands": [
            {"from_hour": 7, "to_hour": 22, "price_per_kwh": 0.30},
            {"from_hour": 22, "to_hour": 7, "price_per_kwh": 0.18},
        ],
        "export_price_per_kwh": 0.08,
    }
    assert prices_at(tariff, 6) == (0.18, 0.08)
    assert prices_at(tariff, 7) == (0.30, 0.08)
    assert prices_at(tariff, 23) == (0.18, 0.08)


def test_cost_uses_the_local_hour_of_each_quarter() -> None:
    # 2 kW from 06:45 to 07:15 Berlin time (05:45-06:15 UTC in winter): 0.5 kWh at 0.18
    # before 07:00 (0.09) and 0.5 kWh at 0.30 after (0.15): 0.24 in all.
    tariff = {
        "type": "tou",
        "bands": [
            {"from_hour": 0, "to_hour": 7, "price_per_kwh": 0.18},
            {"from_hour": 7, "to_hour": 24, "price_per_kwh": 0.30},
        ],
    }
    start = ms("2026-01-10T06:45:00+01:00")
    readings = power_series("d", start, start + 30 * 60_000, 60, 2000.0)
    quarters = quarter_buckets(
        "d", readings, start, start + 30 * 60_000, max_gap_ms=MAX_GAP, tz=BERLIN, tariff=tariff
    )
    assert [round(q.cost, 9) for q in quarters] == [0.09, 0.15]


@pytest.mark.parametrize("watts", [-1500.0])
def test_export_is_negative_energy_priced_at_export(watts: float) -> None:
    # -1,500 W for a quarter: -375 Wh, credited at 0.08/kWh: -0.03.
    tariff = {"type": "flat", "price_per_kwh": 0.30, "export_price_per_kwh": 0.08}
    q = ms("2026-06-01T12:00:00+00:00")
    readings = power_series("d", q, q + 15 * 60_000, 60, watts)
    (quarter,) = quarter_buckets(
        "d", readings, q, q + 15 * 60_000, max_gap_ms=MAX_GAP, tariff=tariff
    )
    assert round(quarter.energy_wh, 9) == -375.0
    assert round(quarter.cost, 9) == -0.03


def test_day_starts_are_utc_instants() -> None:
    assert datetime.fromtimestamp(
        period_start(ms("2026-07-01T00:30:00+02:00"), Granularity.DAY, BERLIN) / 1000, UTC
    ) == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
