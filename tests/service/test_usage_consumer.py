"""The usage consumer over the real embedded stores and bus: late, shuffled, duplicated and
replayed readings all end in the buckets the data calls for. Expected values by hand."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity
from energy_tracker.services.usage.retention import RetentionTask
from tests.service.usage_harness import Harness, usage_harness

MIN = 60_000
HOUR = 60 * MIN


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.fixture
async def utc(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in usage_harness(tmp_path, "UTC"):
        yield h


@pytest.fixture
async def berlin(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in usage_harness(tmp_path, "Europe/Berlin"):
        yield h


def steady(device: str, start: int, end: int, step: int, watts: float) -> list[Reading]:
    return [Reading(device, t, power_w=watts) for t in range(start, end + 1, step)]


async def test_late_reading_corrects_a_published_hour(utc: Harness) -> None:
    # 1,000 W every 10 min from 10:00 to 11:00, but 10:30 is missing: the 20-minute hole is a
    # gap longer than 15 min, so the hour holds 40 min x 1 kW = 666.667 Wh. When 10:30 arrives
    # late, the hour becomes 1 kW x 1 h = 1,000 Wh, in a new version of the bucket.
    h = ms("2026-03-02T10:00:00+00:00")
    first = [
        r for r in steady(utc.device_id, h, h + HOUR, 10 * MIN, 1000.0) if r.ts != h + 30 * MIN
    ]
    await utc.deliver(first)
    assert await utc.energy_wh(Granularity.HOUR, h, h + 1) == [666.666667]
    await utc.deliver([Reading(utc.device_id, h + 30 * MIN, power_w=1000.0)])
    assert await utc.energy_wh(Granularity.HOUR, h, h + 1) == [1000.0]
    hours = [
        e
        for e in await utc.usage_events()
        if e["granularity"] == "hour" and e["period_start_ms"] == h
    ]
    assert [(round(e["energy_kwh"], 6), e["version"]) for e in hours] == [(0.666667, 1), (1.0, 2)]


async def test_duplicates_and_replays_change_nothing(utc: Harness) -> None:
    # 600 W every minute for 30 min: 0.6 kW x 0.5 h = 300 Wh, 150 Wh a quarter.
    q = ms("2026-03-02T10:00:00+00:00")
    batch = steady(utc.device_id, q, q + 30 * MIN, MIN, 600.0)
    await utc.deliver(batch)
    events_once = len(await utc.usage_events())
    await utc.deliver(batch)  # the same message again, as after a crash before the commit
    await utc.deliver(batch[5:9] + batch[5:9])  # duplicates inside a message
    assert len(await utc.usage_events()) == events_once
    assert await utc.energy_wh(Granularity.QUARTER, q, q + 30 * MIN) == [150.0, 150.0]
    (hour,) = await utc.series.buckets([utc.device_id], Granularity.HOUR, q, q + 1)
    assert (hour.samples, hour.version) == (31, 1)


async def test_a_shuffled_day_gives_the_in_order_day(utc: Harness) -> None:
    # 250 W every 5 minutes over one whole UTC day (and the next midnight): 0.25 kW x 24 h
    # = 6,000 Wh in the day, 250 Wh in every hour.
    day = ms("2026-05-10T00:00:00+00:00")
    readings = steady(utc.device_id, day, day + 24 * HOUR, 5 * MIN, 250.0)
    random.Random(7).shuffle(readings)
    for i in range(0, len(readings), 17):
        await utc.deliver(readings[i : i + 17])
    assert await utc.energy_wh(Granularity.DAY, day, day + 1) == [6000.0]
    assert await utc.energy_wh(Granularity.HOUR, day, day + 24 * HOUR) == [250.0] * 24


async def test_new_readings_woven_between_stored_ones(utc: Harness) -> None:
    # 600 W on the even minutes 10:00..10:30, then the odd minutes 10:01..10:29 in one message:
    # all new, but stored readings lie between them, so the quarters must be read back whole.
    # 0.6 kW x 15 min = 150 Wh a quarter either way; each quarter then holds 15 samples
    # (minutes 0-14 and 15-29), where the evens alone gave 8 and 7.
    q = ms("2026-03-02T10:00:00+00:00")
    await utc.deliver(steady(utc.device_id, q, q + 30 * MIN, 2 * MIN, 600.0))
    await utc.deliver(steady(utc.device_id, q + MIN, q + 29 * MIN, 2 * MIN, 600.0))
    quarters = await utc.series.buckets([utc.device_id], Granularity.QUARTER, q, q + 30 * MIN)
    assert [(round(b.energy_wh, 6), b.samples) for b in quarters] == [(150.0, 15), (150.0, 15)]
    # Then 10:31..10:44 appended after everything stored: 14 more samples in the third quarter
    # (with 10:30), and 0.6 kW x 14 min = 140 Wh there.
    await utc.deliver(steady(utc.device_id, q + 31 * MIN, q + 44 * MIN, MIN, 600.0))
    (third,) = await utc.series.buckets(
        [utc.device_id], Granularity.QUARTER, q + 30 * MIN, q + 30 * MIN + 1
    )
    assert (round(third.energy_wh, 6), third.samples) == (140.0, 15)


@pytest.mark.parametrize(
    ("local_day", "next_day", "expected_wh"),
    [
        # Spring forward: the day has 23 hours, 100 W all day is 2,300 Wh.
        ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 2300.0),
        # Fall back: 25 hours, 2,500 Wh.
        ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 2500.0),
    ],
)
async def test_berlin_dst_days(
    berlin: Harness, local_day: str, next_day: str, expected_wh: float
) -> None:
    start, end = ms(local_day), ms(next_day)
    await berlin.deliver(steady(berlin.device_id, start - HOUR, end + HOUR, 10 * MIN, 100.0))
    days = await berlin.energy_wh(Granularity.DAY, start - 25 * HOUR, end + 1)
    # The day before and after are partly covered (1 h each: 100 Wh); the DST day in full.
    assert days == [100.0, expected_wh, 100.0]


@pytest.fixture
async def kolkata(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in usage_harness(tmp_path, "Asia/Kolkata"):
        yield h


# Berlin time of use: 0.18 a kWh from 22:00 to 07:00, 0.40 from 07:00 to 22:00.
TOU = {
    "type": "tou",
    "bands": [
        {"from_hour": 22, "to_hour": 7, "price_per_kwh": 0.18},
        {"from_hour": 7, "to_hour": 22, "price_per_kwh": 0.40},
    ],
}


@pytest.fixture
async def berlin_tou(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in usage_harness(tmp_path, "Europe/Berlin", TOU):
        yield h


async def test_counter_reset_in_mid_hour(utc: Harness) -> None:
    # A counter every 10 min: 1000, 1100, 1200 Wh, then reset to 50 at 10:30, then 150, 250, 350.
    # Deltas 100 + 100, the reset counts its new value from zero: 50, then 100 + 100 + 100.
    # The hour: 550 Wh. Quarters (a segment split in proportion to time):
    #   10:00-10:15  100 (10:00-10:10) + 5/10 x 100 (10:10-10:15)            = 150
    #   10:15-10:30  5/10 x 100 (10:15-10:20) + 50 (10:20-10:30, the reset)  = 100
    #   10:30-10:45  100 (10:30-10:40) + 5/10 x 100                           = 150
    #   10:45-11:00  5/10 x 100 + 100 (10:50-11:00)                           = 150
    h = ms("2026-03-02T10:00:00+00:00")
    counter = [1000.0, 1100.0, 1200.0, 50.0, 150.0, 250.0, 350.0]
    await utc.deliver(
        [Reading(utc.device_id, h + i * 10 * MIN, energy_wh=e) for i, e in enumerate(counter)]
    )
    assert await utc.energy_wh(Granularity.HOUR, h, h + 1) == [550.0]
    assert await utc.energy_wh(Granularity.QUARTER, h, h + HOUR) == [150.0, 100.0, 150.0, 150.0]


async def test_a_two_hour_gap(utc: Harness) -> None:
    # 500 W every 5 min from 09:00 to 10:00 and from 12:00 to 13:00, nothing in between: the
    # 2-hour hole is longer than max_gap (15 min), so it holds no energy. 0.5 kW x 1 h = 500 Wh
    # in hour 9 and in hour 12, none in 10 and 11; the day: 1,000 Wh.
    day = ms("2026-03-02T00:00:00+00:00")
    power = steady(utc.device_id, day + 9 * HOUR, day + 10 * HOUR, 5 * MIN, 500.0)
    power += steady(utc.device_id, day + 12 * HOUR, day + 13 * HOUR, 5 * MIN, 500.0)
    await utc.deliver(power)
    hours = await utc.series.buckets([utc.device_id], Granularity.HOUR, day, day + 24 * HOUR)
    assert {(b.start - day) // HOUR: round(b.energy_wh, 6) for b in hours if b.energy_wh} == {
        9: 500.0,
        12: 500.0,
    }
    assert await utc.energy_wh(Granularity.DAY, day, day + 1) == [1000.0]


async def test_a_counter_across_a_two_hour_gap_spreads_its_energy(utc: Harness) -> None:
    # A counter knows what was used in a gap: 0 Wh at 14:00 and 2,000 Wh at 16:00 is 2,000 Wh
    # spread in proportion to time: 1,000 Wh in hour 14 and 1,000 Wh in hour 15.
    h = ms("2026-03-03T14:00:00+00:00")
    await utc.deliver(
        [
            Reading(utc.device_id, h, energy_wh=0.0),
            Reading(utc.device_id, h + 2 * HOUR, energy_wh=2000.0),
        ]
    )
    assert await utc.energy_wh(Granularity.HOUR, h, h + 2 * HOUR) == [1000.0, 1000.0]


async def test_counters_399_days_apart_touch_a_bounded_number_of_buckets(utc: Harness) -> None:
    # 0 Wh on 1 January 2025 at 12:00, 1,000,000 Wh 399 days later at 12:00 (4 February 2026):
    # the energy is real, so every bucket holding the closing day sums to it, but it lies on the
    # last 24 h before the gap closes (COUNTER_SPREAD_MS), 1e6 / 24 = 41,666.667 Wh an hour,
    # not on 38,000 quarters: 3 February 12:00-24:00 holds half (500,000 Wh), 4 February the
    # other half, and nothing lies before 3 February 12:00.
    a = ms("2025-01-01T12:00:00+00:00")
    b = a + 399 * 24 * HOUR
    assert b == ms("2026-02-04T12:00:00+00:00")
    await utc.deliver(
        [Reading(utc.device_id, a, energy_wh=0.0), Reading(utc.device_id, b, energy_wh=1e6)]
    )
    assert await utc.energy_wh(Granularity.DAY, b - 36 * HOUR, b) == [500_000.0, 500_000.0]
    assert await utc.energy_wh(Granularity.HOUR, b - 24 * HOUR, b) == [41_666.666667] * 24
    assert await utc.energy_wh(Granularity.MONTH, a - 12 * HOUR, b - 36 * 24 * HOUR) == [0.0]
    assert await utc.energy_wh(Granularity.MONTH, ms("2026-02-01T00:00:00+00:00"), b) == [1e6]
    # Events: 96 quarters with energy and the two holding a reading; 24 hours and the two
    # holding a reading; 3 and 4 February and 1 January 2025; January 2025 and February 2026.
    assert len(await utc.usage_events()) == 98 + 26 + 3 + 2


async def test_time_of_use_across_its_band_edge(berlin_tou: Harness) -> None:
    # 2 kW every minute from 06:30 to 07:30 Berlin time on a winter day (UTC+1): 05:30-06:30 UTC.
    # Before 07:00 local: 0.5 h x 2 kW = 1 kWh at 0.18 = 0.18; after: 1 kWh at 0.40 = 0.40.
    # UTC hour 05:00 holds the first kWh (cost 0.18), UTC hour 06:00 the second (0.40); the
    # local day 2 kWh for 0.58.
    h = berlin_tou
    start = ms("2026-01-15T06:30:00+01:00")
    await h.deliver(steady(h.device_id, start, start + HOUR, MIN, 2000.0))
    hours = await h.series.buckets(
        [h.device_id], Granularity.HOUR, ms("2026-01-15T05:00:00+00:00"), start + 2 * HOUR
    )
    assert [(round(b.energy_wh, 6), round(b.cost, 6)) for b in hours] == [
        (1000.0, 0.18),
        (1000.0, 0.40),
    ]
    day = ms("2026-01-15T00:00:00+01:00")
    (local_day,) = await h.series.buckets([h.device_id], Granularity.DAY, day, day + 1)
    assert (round(local_day.energy_wh, 6), round(local_day.cost, 6)) == (2000.0, 0.58)


async def test_an_hour_split_by_a_half_hour_zone_midnight(kolkata: Harness) -> None:
    # India is UTC+5:30: its midnight is 18:30 UTC, in the middle of the UTC hour 18:00. 1 kW
    # every minute from 18:00 to 18:30 in one message, 18:31 to 19:00 in the next: the hour is
    # 1 kW x 1 h = 1,000 Wh, the local day ending at 18:30 UTC gets 500 Wh and the next 500 Wh.
    # (The second message must not re-sum the hour from the new local day's quarters only.)
    h = ms("2026-03-02T18:00:00+00:00")
    await kolkata.deliver(steady(kolkata.device_id, h, h + 30 * MIN, MIN, 1000.0))
    await kolkata.deliver(steady(kolkata.device_id, h + 31 * MIN, h + HOUR, MIN, 1000.0))
    assert await kolkata.energy_wh(Granularity.HOUR, h, h + 1) == [1000.0]
    midnight = ms("2026-03-03T00:00:00+05:30")
    assert await kolkata.energy_wh(Granularity.DAY, midnight - 24 * HOUR, midnight + 1) == [
        500.0,
        500.0,
    ]


async def test_retention_deletes_old_raw_readings_and_keeps_buckets(utc: Harness) -> None:
    # Retention 400 days, pruned one day behind the window: with "now" fixed, a reading 402 days
    # old goes, one 400.5 days old (inside the margin) and one 10 days old stay, and the buckets
    # they made stay as they were.
    now = ms("2026-11-28T12:00:00+00:00")
    day = 86_400_000
    old = [now - 402 * day, now - 402 * day + 10 * MIN]  # 10 min of 600 W: 100 Wh
    kept = [now - 400 * day - 12 * HOUR, now - 10 * day]
    await utc.deliver([Reading(utc.device_id, t, power_w=600.0) for t in old + kept])
    hour = old[0] - old[0] % HOUR
    assert await utc.energy_wh(Granularity.HOUR, hour, hour + 1) == [100.0]

    assert await RetentionTask(utc.series, retention_days=400).prune(now_ms=now) == 2
    left = await utc.series.readings_page(utc.device_id, 0, now, None, 100)
    assert [r.ts for r in left] == kept
    assert await utc.energy_wh(Granularity.HOUR, hour, hour + 1) == [100.0]
