"""The time-series store contract, one suite for every adapter: sqlite and postgresql.

The postgresql leg gets a fresh database per test (tests/backends.py); without TimescaleDB on the
server it exercises the monthly-partition layout, so several tests span months on purpose.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.core.stores.timeseries.postgres import PostgresSeriesStore

A = "0b0e3f6a-1111-4000-8000-00000000000a"
B = "0b0e3f6a-2222-4000-8000-00000000000b"
C = "0b0e3f6a-3333-4000-8000-00000000000c"

JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB = 1_769_904_000_000  # 2026-02-01T00:00:00Z
MAR = 1_772_323_200_000  # 2026-03-01T00:00:00Z
HOUR = 3_600_000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/data/series.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SeriesStore]:
    store = series_store_from_url(store_url)
    await store.start()
    try:
        await store.migrate()
        yield store
    finally:
        await store.stop()


def keys(readings: list[Reading]) -> list[tuple[str, int]]:
    return [(r.device_id, r.ts) for r in readings]


# -- add_readings ------------------------------------------------------------------------------


async def test_add_readings_returns_only_the_new_ones(store: SeriesStore) -> None:
    first = [
        Reading(A, JAN, power_w=100.0),
        Reading(A, JAN + 1000, power_w=110.0),
        Reading(A, JAN, power_w=999.0),  # repeated inside the batch: the first wins
        Reading(B, JAN, power_w=200.0),  # same ts, another device: a different reading
    ]
    new = await store.add_readings(first)
    assert new == [
        Reading(A, JAN, power_w=100.0),
        Reading(A, JAN + 1000, power_w=110.0),
        Reading(B, JAN, power_w=200.0),
    ]

    second = [
        Reading(A, JAN + 1000, power_w=555.0),  # stored before: ignored, not overwritten
        Reading(A, JAN + 2000, power_w=120.0),
        Reading(B, JAN, power_w=555.0),
    ]
    assert await store.add_readings(second) == [Reading(A, JAN + 2000, power_w=120.0)]
    assert await store.add_readings(second) == []  # a redelivery adds nothing
    assert await store.add_readings([]) == []

    assert await store.readings_page(A, JAN, JAN + HOUR, None, 10) == [
        Reading(A, JAN, power_w=100.0),
        Reading(A, JAN + 1000, power_w=110.0),
        Reading(A, JAN + 2000, power_w=120.0),
    ]
    assert await store.readings_page(B, JAN, JAN + HOUR, None, 10) == [
        Reading(B, JAN, power_w=200.0)
    ]


async def test_add_readings_spanning_months_and_odd_clocks(store: SeriesStore) -> None:
    batch = [
        Reading(A, JAN + 5, power_w=1.0),
        Reading(A, FEB + 5, power_w=2.0),
        Reading(A, MAR + 5, power_w=3.0),
        Reading(A, 0, power_w=4.0),  # 1970: a device whose clock was never set
        Reading(A, 4_102_444_800_000, power_w=5.0),  # 2100-01-01
    ]
    assert await store.add_readings(batch) == batch
    assert await store.add_readings(batch) == []
    assert keys(await store.readings_page(A, 0, 4_200_000_000_000, None, 10)) == [
        (A, 0),
        (A, JAN + 5),
        (A, FEB + 5),
        (A, MAR + 5),
        (A, 4_102_444_800_000),
    ]


async def test_partly_stored_batch_reports_exactly_the_new_readings(store: SeriesStore) -> None:
    await store.add_readings(
        [Reading(A, JAN + i * 1000, power_w=float(i)) for i in range(0, 10, 2)]
    )
    mixed = [Reading(A, JAN + i * 1000, power_w=float(i)) for i in range(10)]
    new = await store.add_readings(mixed)
    assert keys(new) == [
        (A, JAN + 1000),
        (A, JAN + 3000),
        (A, JAN + 5000),
        (A, JAN + 7000),
        (A, JAN + 9000),
    ]


async def test_concurrent_overlapping_batches_report_each_reading_once(
    store: SeriesStore,
) -> None:
    one = [Reading(d, JAN + i * 1000, power_w=1.0) for d in (A, B) for i in range(0, 300)]
    two = [Reading(d, JAN + i * 1000, power_w=2.0) for d in (B, C) for i in range(200, 500)]
    got_one, got_two = await asyncio.gather(store.add_readings(one), store.add_readings(two))
    reported = keys(got_one) + keys(got_two)
    assert len(reported) == len(set(reported)) == 300 + 500 + 300
    assert len(await store.readings_page(B, JAN, JAN + HOUR, None, 1000)) == 500


async def test_none_fields_round_trip(store: SeriesStore) -> None:
    readings = [
        Reading(A, JAN, power_w=None, energy_wh=1234.5, voltage_v=None, current_a=None),
        Reading(A, JAN + 1, power_w=-250.0, energy_wh=None, voltage_v=231.2, current_a=1.08),
        Reading(A, JAN + 2),
        Reading(A, JAN + 3, power_w=100, energy_wh=0),  # integers come back as equal floats
    ]
    await store.add_readings(readings)
    assert await store.readings_page(A, JAN, JAN + 10, None, 10) == [
        Reading(A, JAN, None, 1234.5, None, None),
        Reading(A, JAN + 1, -250.0, None, 231.2, 1.08),
        Reading(A, JAN + 2, None, None, None, None),
        Reading(A, JAN + 3, 100.0, 0.0, None, None),
    ]


# -- reads -------------------------------------------------------------------------------------


async def test_readings_around_adds_one_before_start_and_one_at_or_after_end(
    store: SeriesStore,
) -> None:
    await store.add_readings(
        [Reading(A, JAN + m * 60_000, power_w=float(m)) for m in (0, 10, 20, 30, 40, 50, 60, 70)]
        + [Reading(B, JAN + 25 * 60_000, power_w=9.0)]
    )
    around = await store.readings_around(A, JAN + 25 * 60_000, JAN + 50 * 60_000)
    assert [r.ts for r in around] == [
        JAN + 20 * 60_000,  # the last one before start
        JAN + 30 * 60_000,
        JAN + 40 * 60_000,
        JAN + 50 * 60_000,  # the first at or after end (exactly at end)
    ]
    assert [r.power_w for r in around] == [20.0, 30.0, 40.0, 50.0]

    exact = await store.readings_around(A, JAN + 20 * 60_000, JAN + 31 * 60_000)
    assert [r.ts for r in exact] == [
        JAN + 10 * 60_000,
        JAN + 20 * 60_000,
        JAN + 30 * 60_000,
        JAN + 40 * 60_000,
    ]

    # nothing inside the range: still the neighbours on both sides
    gap = await store.readings_around(A, JAN + 61 * 60_000, JAN + 62 * 60_000)
    assert [r.ts for r in gap] == [JAN + 60 * 60_000, JAN + 70 * 60_000]

    # at the edges of the series there is no neighbour to add on that side
    before_all = await store.readings_around(A, JAN - HOUR, JAN + 60_000)
    assert [r.ts for r in before_all] == [JAN, JAN + 10 * 60_000]
    after_all = await store.readings_around(A, JAN + 65 * 60_000, JAN + 5 * HOUR)
    assert [r.ts for r in after_all] == [JAN + 60 * 60_000, JAN + 70 * 60_000]
    assert await store.readings_around(C, JAN, JAN + HOUR) == []


async def test_readings_around_across_months(store: SeriesStore) -> None:
    await store.add_readings([Reading(A, JAN + 1, power_w=1.0), Reading(A, MAR + 1, power_w=3.0)])
    around = await store.readings_around(A, FEB, FEB + HOUR)
    assert keys(around) == [(A, JAN + 1), (A, MAR + 1)]


async def test_readings_around_many_serves_several_devices_and_windows_at_once(
    store: SeriesStore,
) -> None:
    minute = 60_000
    await store.add_readings(
        [Reading(A, JAN + m * minute, power_w=float(m)) for m in (0, 10, 20, 30, 40, 50, 60, 70)]
        + [Reading(B, JAN + m * minute, power_w=100.0 + m) for m in (5, 15, 25)]
        + [Reading(C, JAN + 1, power_w=1.0), Reading(C, MAR + 1, power_w=3.0)]
    )
    got = await store.readings_around_many(
        [
            (A, JAN + 25 * minute, JAN + 50 * minute),
            (B, JAN + 10 * minute, JAN + 20 * minute),
            (A, JAN + 45 * minute, JAN + 62 * minute),  # overlaps A's first window
            ("never-seen", JAN, JAN + HOUR),
            (C, FEB, FEB + HOUR),  # neighbours in other months (partitions)
            (B, JAN + 16 * minute, JAN + 16 * minute),  # empty, inside B's first window
        ]
    )
    assert {device: keys(readings) for device, readings in got.items()} == {
        A: [
            (A, JAN + 20 * minute),
            (A, JAN + 30 * minute),
            (A, JAN + 40 * minute),
            (A, JAN + 50 * minute),
            (A, JAN + 60 * minute),
            (A, JAN + 70 * minute),
        ],
        B: [(B, JAN + 5 * minute), (B, JAN + 15 * minute), (B, JAN + 25 * minute)],
        "never-seen": [],
        C: [(C, JAN + 1), (C, MAR + 1)],
    }
    assert got[B] == [
        Reading(B, JAN + 5 * minute, power_w=105.0),
        Reading(B, JAN + 15 * minute, power_w=115.0),
        Reading(B, JAN + 25 * minute, power_w=125.0),
    ]
    assert await store.readings_around_many([]) == {}


async def test_count_readings_many_counts_each_window_at_once(store: SeriesStore) -> None:
    minute = 60_000
    await store.add_readings(
        [Reading(A, JAN + m * minute, power_w=1.0) for m in range(10)]
        + [Reading(B, FEB + m * minute, power_w=2.0) for m in range(3)]
        + [Reading(C, JAN + 1, power_w=1.0), Reading(C, MAR + 1, power_w=3.0)]
    )
    got = await store.count_readings_many(
        [
            (A, JAN + 2 * minute, JAN + 7 * minute),  # minutes 2..6: start in, end out
            (B, FEB, FEB + HOUR),
            (C, JAN, MAR + 2),  # across months (partitions)
            ("never-seen", JAN, MAR),
        ]
    )
    assert got == {A: 5, B: 3, C: 2, "never-seen": 0}
    assert await store.count_readings_many([]) == {}


async def test_readings_around_many_merges_disjoint_windows_of_a_device(
    store: SeriesStore,
) -> None:
    minute = 60_000
    await store.add_readings(
        [Reading(A, JAN + m * minute, power_w=float(m)) for m in (0, 10, 20, 30, 40, 50, 60, 70)]
        + [Reading(B, JAN + m * minute, power_w=float(m)) for m in (0, 10, 20, 30)]
    )
    got = await store.readings_around_many(
        [
            (A, JAN + 61 * minute, JAN + 62 * minute),  # 60, 70
            (A, JAN + 5 * minute, JAN + 15 * minute),  # 0, 10, 20: the next of [1, 2) is inside
            (A, JAN + 21 * minute, JAN + 29 * minute),  # 20, 30
            (A, JAN + 55 * minute, JAN + 58 * minute),  # 50, 60: shares 60 with [61, 62)
            (A, JAN + 1 * minute, JAN + 2 * minute),  # 0, 10
            (B, JAN + 20 * minute, JAN + 10 * minute),  # inverted: empty at 20 -> 10, 20
        ]
    )
    # 40 lies in no window and next to none: the gaps between windows are not filled in
    assert got == {
        A: [
            Reading(A, JAN, power_w=0.0),
            Reading(A, JAN + 10 * minute, power_w=10.0),
            Reading(A, JAN + 20 * minute, power_w=20.0),
            Reading(A, JAN + 30 * minute, power_w=30.0),
            Reading(A, JAN + 50 * minute, power_w=50.0),
            Reading(A, JAN + 60 * minute, power_w=60.0),
            Reading(A, JAN + 70 * minute, power_w=70.0),
        ],
        B: [
            Reading(B, JAN + 10 * minute, power_w=10.0),
            Reading(B, JAN + 20 * minute, power_w=20.0),
        ],
    }


async def test_readings_page_paginates_with_after_ts(store: SeriesStore) -> None:
    await store.add_readings([Reading(A, JAN + i * 1000, power_w=float(i)) for i in range(7)])
    await store.add_readings([Reading(B, JAN + i * 1000, power_w=0.0) for i in range(7)])
    end = JAN + 6000  # exclusive: the reading at JAN + 6000 is out

    page1 = await store.readings_page(A, JAN, end, None, 2)
    assert [r.ts for r in page1] == [JAN, JAN + 1000]
    page2 = await store.readings_page(A, JAN, end, page1[-1].ts, 2)
    assert [r.ts for r in page2] == [JAN + 2000, JAN + 3000]
    page3 = await store.readings_page(A, JAN, end, page2[-1].ts, 2)
    assert [r.ts for r in page3] == [JAN + 4000, JAN + 5000]
    assert await store.readings_page(A, JAN, end, page3[-1].ts, 2) == []

    # after_ts before start does not widen the range
    assert [r.ts for r in await store.readings_page(A, JAN + 3000, end, JAN - 1, 10)] == [
        JAN + 3000,
        JAN + 4000,
        JAN + 5000,
    ]
    assert [r.power_w for r in page2] == [2.0, 3.0]
    assert await store.readings_page(A, JAN, end, None, 0) == []
    assert await store.readings_page(A, JAN, end, None, -1) == []
    assert await store.readings_page(C, JAN, end, None, 10) == []


# -- buckets -----------------------------------------------------------------------------------


async def test_put_buckets_round_trips_every_field_and_replaces(store: SeriesStore) -> None:
    bucket = Bucket(
        A,
        Granularity.HOUR,
        JAN,
        energy_wh=512.25,
        cost=0.153675,
        samples=360,
        power_samples=358,
        power_sum_w=183_420.5,
        min_power_w=-12.5,
        max_power_w=2_400.0,
        version=3,
    )
    await store.put_buckets([bucket])
    assert await store.buckets([A], Granularity.HOUR, JAN, JAN + HOUR) == [bucket]

    replaced = Bucket(A, Granularity.HOUR, JAN, energy_wh=600.0, samples=400, version=4)
    await store.put_buckets([replaced])
    got = await store.buckets([A], Granularity.HOUR, JAN, JAN + HOUR)
    assert got == [
        Bucket(
            A,
            Granularity.HOUR,
            JAN,
            energy_wh=600.0,
            cost=0.0,
            samples=400,
            power_samples=0,
            power_sum_w=0.0,
            min_power_w=None,
            max_power_w=None,
            version=4,
        )
    ]
    assert got[0].avg_power_w is None

    # one batch naming a bucket twice: the later one wins, as with two puts
    await store.put_buckets(
        [
            Bucket(A, Granularity.HOUR, JAN, energy_wh=1.0, version=5),
            Bucket(A, Granularity.HOUR, JAN, energy_wh=2.0, version=6),
        ]
    )
    assert await store.buckets([A], Granularity.HOUR, JAN, JAN + HOUR) == [
        Bucket(A, Granularity.HOUR, JAN, energy_wh=2.0, version=6)
    ]
    await store.put_buckets([])


async def test_buckets_by_devices_and_range_ordered_by_device_then_start(
    store: SeriesStore,
) -> None:
    # written out of order, and device B before device A
    await store.put_buckets(
        [
            Bucket(B, Granularity.HOUR, JAN + h * HOUR, energy_wh=20.0 + h, version=1)
            for h in (2, 0, 1)
        ]
        + [
            Bucket(A, Granularity.HOUR, JAN + h * HOUR, energy_wh=10.0 + h, version=1)
            for h in (1, 3, 0, 2)
        ]
        + [Bucket(C, Granularity.HOUR, JAN + HOUR, energy_wh=30.0, version=1)]
    )
    got = await store.buckets([B, A, "never-seen"], Granularity.HOUR, JAN, JAN + 3 * HOUR)
    assert [(b.device_id, b.start, b.energy_wh) for b in got] == [
        (A, JAN, 10.0),
        (A, JAN + HOUR, 11.0),
        (A, JAN + 2 * HOUR, 12.0),
        (B, JAN, 20.0),
        (B, JAN + HOUR, 21.0),
        (B, JAN + 2 * HOUR, 22.0),
    ]
    assert [
        b.start for b in await store.buckets([A], Granularity.HOUR, JAN + HOUR, JAN + 3 * HOUR)
    ] == [
        JAN + HOUR,
        JAN + 2 * HOUR,
    ]
    assert await store.buckets([], Granularity.HOUR, JAN, JAN + HOUR) == []
    assert await store.buckets(["never-seen"], Granularity.HOUR, JAN, JAN + HOUR) == []


async def test_buckets_many_returns_each_bucket_once_in_device_granularity_start_order(
    store: SeriesStore,
) -> None:
    quarter = HOUR // 4
    await store.put_buckets(
        [Bucket(B, Granularity.HOUR, JAN + h * HOUR, energy_wh=20.0 + h, version=1) for h in (0, 1)]
        + [
            Bucket(A, Granularity.HOUR, JAN + h * HOUR, energy_wh=10.0 + h, version=1)
            for h in range(4)
        ]
        + [
            Bucket(A, Granularity.QUARTER, JAN + q * quarter, energy_wh=q, version=1)
            for q in range(6)
        ]
        + [
            Bucket(A, Granularity.DAY, JAN, energy_wh=240.0, version=1),
            Bucket(A, Granularity.MONTH, JAN, energy_wh=7440.0, version=2),
            Bucket(C, Granularity.HOUR, JAN, energy_wh=30.0, version=1),
        ]
    )
    got = await store.buckets_many(
        [
            (B, Granularity.HOUR, JAN, JAN + 2 * HOUR),
            (A, Granularity.DAY, JAN, FEB),
            (A, Granularity.HOUR, JAN + HOUR, JAN + 3 * HOUR),
            (A, Granularity.HOUR, JAN, JAN + 2 * HOUR),  # overlaps the one above
            (A, Granularity.HOUR, JAN + HOUR, JAN + 2 * HOUR),  # inside both
            (A, Granularity.QUARTER, JAN + quarter, JAN + 3 * quarter),
            (A, Granularity.QUARTER, JAN + 3 * quarter, JAN + 4 * quarter),  # touches the above
            (A, Granularity.QUARTER, JAN + 5 * quarter, JAN + 6 * quarter),
            ("never-seen", Granularity.HOUR, JAN, FEB),
            (B, Granularity.HOUR, JAN + HOUR, JAN + HOUR),  # empty range
            (A, Granularity.MONTH, FEB, MAR),  # nothing in range
            (B, Granularity.HOUR, JAN, JAN + HOUR),  # repeated
        ]
    )
    assert [(b.device_id, b.granularity, b.start, b.energy_wh) for b in got] == [
        (A, Granularity.QUARTER, JAN + quarter, 1.0),
        (A, Granularity.QUARTER, JAN + 2 * quarter, 2.0),
        (A, Granularity.QUARTER, JAN + 3 * quarter, 3.0),
        (A, Granularity.QUARTER, JAN + 5 * quarter, 5.0),
        (A, Granularity.HOUR, JAN, 10.0),
        (A, Granularity.HOUR, JAN + HOUR, 11.0),
        (A, Granularity.HOUR, JAN + 2 * HOUR, 12.0),
        (A, Granularity.DAY, JAN, 240.0),
        (B, Granularity.HOUR, JAN, 20.0),
        (B, Granularity.HOUR, JAN + HOUR, 21.0),
    ]
    assert await store.buckets_many([(A, Granularity.MONTH, JAN, FEB)]) == [
        Bucket(A, Granularity.MONTH, JAN, energy_wh=7440.0, version=2)
    ]
    assert await store.buckets_many([]) == []
    assert await store.buckets_many([("never-seen", Granularity.DAY, JAN, FEB)]) == []


async def test_granularities_are_kept_apart(store: SeriesStore) -> None:
    await store.put_buckets(
        [
            Bucket(A, Granularity.QUARTER, JAN, energy_wh=1.0, version=1),
            Bucket(A, Granularity.HOUR, JAN, energy_wh=4.0, version=1),
            Bucket(A, Granularity.DAY, JAN, energy_wh=96.0, version=1),
            Bucket(A, Granularity.MONTH, JAN, energy_wh=2976.0, version=1),
        ]
    )
    for granularity, energy in (
        (Granularity.QUARTER, 1.0),
        (Granularity.HOUR, 4.0),
        (Granularity.DAY, 96.0),
        (Granularity.MONTH, 2976.0),
    ):
        got = await store.buckets([A], granularity, JAN, FEB)
        assert [(b.granularity, b.energy_wh) for b in got] == [(granularity, energy)]


_DAY = 24 * HOUR
# Three days of A and B asked about, with a device, a grain and a day that are not.
_DAYS_OF_A_AND_B = [
    Bucket(A, Granularity.DAY, JAN, 1000.0, 0.25, 96, 96, 9600.0, 50.0, 200.0, 3),
    Bucket(A, Granularity.DAY, JAN + _DAY, 2000.0, 0.5, 96, 96, 19200.0, 80.0, 300.0, 1),
    Bucket(B, Granularity.DAY, JAN, 500.0, 0.125, 48, 40, 2000.0, 10.0, 900.0, 2),
    Bucket(B, Granularity.DAY, JAN + 2 * _DAY, 250.0, 0.0625, 10, 0, 0.0, None, None, 1),
    Bucket(C, Granularity.DAY, JAN, 7.0, 1.0, 1, 1, 7.0, 7.0, 7.0, 1),  # not asked for
    Bucket(A, Granularity.HOUR, JAN, 99.0, 9.0, 9, 9, 9.0, 9.0, 9.0, 1),  # other grain
    Bucket(A, Granularity.DAY, JAN + 3 * _DAY, 5.0, 0.5, 1, 1, 5.0, 5.0, 5.0, 1),  # after
]


async def test_summed_buckets_adds_devices_period_by_period(store: SeriesStore) -> None:
    day = 24 * HOUR
    await store.put_buckets(_DAYS_OF_A_AND_B)
    got = await store.summed_buckets([A, B, "never-seen", A], Granularity.DAY, JAN, JAN + 3 * day)
    # By hand: day 1 is A + B (1000 + 500 Wh, 0.25 + 0.125, 96 + 48 samples, 96 + 40 power
    # samples, 9600 + 2000 W summed, min(50, 10), max(200, 900)); day 2 is A alone; day 3 is
    # B alone, without power. Every total is device "*", version 0.
    assert got == [
        Bucket("*", Granularity.DAY, JAN, 1500.0, 0.375, 144, 136, 11600.0, 10.0, 900.0, 0),
        Bucket("*", Granularity.DAY, JAN + day, 2000.0, 0.5, 96, 96, 19200.0, 80.0, 300.0, 0),
        Bucket("*", Granularity.DAY, JAN + 2 * day, 250.0, 0.0625, 10, 0, 0.0, None, None, 0),
    ]
    assert await store.summed_buckets([], Granularity.DAY, JAN, FEB) == []
    assert await store.summed_buckets(["never-seen"], Granularity.DAY, JAN, FEB) == []
    assert await store.summed_buckets([A], Granularity.DAY, FEB, JAN) == []


async def test_device_totals_add_each_devices_periods(store: SeriesStore) -> None:
    day = 24 * HOUR
    await store.put_buckets(_DAYS_OF_A_AND_B)
    got = await store.device_totals([B, A, "never-seen", A], Granularity.DAY, JAN, JAN + 3 * day)
    # By hand: A is its first two days (1000 + 2000 Wh, 0.25 + 0.5, 96 + 96 samples, 96 + 96
    # power samples, 9600 + 19200 W summed, min(50, 80), max(200, 300)); B its two days
    # (500 + 250 Wh, 0.125 + 0.0625, 48 + 10, 40 + 0, 2000 + 0, min 10, max 900). Ordered by
    # device, each starting at the asked start, version 0.
    assert got == [
        Bucket(A, Granularity.DAY, JAN, 3000.0, 0.75, 192, 192, 28800.0, 50.0, 300.0, 0),
        Bucket(B, Granularity.DAY, JAN, 750.0, 0.1875, 58, 40, 2000.0, 10.0, 900.0, 0),
    ]
    assert await store.device_totals([], Granularity.DAY, JAN, FEB) == []
    assert await store.device_totals(["never-seen"], Granularity.DAY, JAN, FEB) == []
    assert await store.device_totals([A], Granularity.DAY, FEB, JAN) == []
    assert await store.device_totals([C], Granularity.MONTH, JAN, FEB) == []


# -- query plans -------------------------------------------------------------------------------

PLAN_DEVICES = 300
PLAN_READINGS_EACH = 200
DAY = 24 * HOUR
SQLITE_PARAMS: dict[str, tuple | dict] = {
    "buckets": (1, "day", JAN, JAN + DAY),
    "summed_buckets": ("[1, 2]", "day", JAN, JAN + DAY),
    "device_totals": ("[1, 2]", "day", JAN, JAN + DAY),
    "readings_page": {"s": 1, "low": JAN, "end": JAN + DAY, "limit": 10},
    "readings_around": {"s": 1, "start": JAN, "end": JAN + DAY},
    "count_readings": (1, JAN, JAN + DAY),
}
POSTGRES_PARAMS: dict[str, tuple] = {
    "buckets_many": (["plan-0001"], ["day"], [JAN], [JAN + DAY]),
    "summed_buckets": (["plan-0001", "plan-0002"], "day", JAN, JAN + DAY),
    "device_totals": (["plan-0001", "plan-0002"], "day", JAN, JAN + DAY),
    "readings_page": (1, JAN, JAN + DAY, 10),
    "readings_around_many": (["plan-0001"], [JAN], [JAN + DAY]),
    "count_readings_many": (["plan-0001"], [JAN], [JAN + DAY]),
}


async def test_no_read_scans_a_whole_table(store: SeriesStore, store_url: str, kind: str) -> None:
    """Each read statement finds its rows through a key, on a store big enough for a planner
    to prefer the key: a whole-table scan is what grows with history (10M readings). (On
    PostgreSQL the series table, one row a device, may be hashed whole while it is this small:
    a few hundred rows cost less than its index.)"""
    devices = [f"plan-{i:04d}" for i in range(PLAN_DEVICES)]
    await store.add_readings(
        [
            Reading(d, JAN + i * 60_000, power_w=1.0)
            for d in devices
            for i in range(PLAN_READINGS_EACH)
        ]
    )
    await store.put_buckets(
        [
            Bucket(d, g, JAN + i * HOUR, 1.0, version=1)
            for d in devices
            for g in Granularity
            for i in range(30)
        ]
    )
    if kind == "sqlite":
        from energy_tracker.core.stores.timeseries import sqlite

        db = sqlite3.connect(sqlite.sqlite_path(store_url))
        try:
            for name, sql in sqlite.READ_STATEMENTS.items():
                params = SQLITE_PARAMS[name]
                plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                scans = [
                    step for step in plan if re.match(r"SCAN (readings|buckets|series)\b", step)
                ]
                assert not scans, f"{name}: {plan}"
        finally:
            db.close()
        return
    from energy_tracker.core.stores.timeseries import postgres

    conn = await asyncpg.connect(store_url)
    try:
        await conn.execute("ANALYZE")
        for name, sql in postgres.READ_STATEMENTS.items():
            params = POSTGRES_PARAMS[name]
            plan = [row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *params)]
            # An empty relation (cost 0.00..0.00: the default partition) may be scanned.
            scans = [
                step
                for step in plan
                if re.search(r"Seq Scan on (readings|buckets)", step)
                and "cost=0.00..0.00 " not in step
            ]
            assert not scans, f"{name}: {plan}"
    finally:
        await conn.close()


# -- retention, schema, failures ---------------------------------------------------------------


async def test_delete_readings_before_keeps_newer_readings_and_buckets(store: SeriesStore) -> None:
    await store.add_readings(
        [
            Reading(A, 0, power_w=0.0),
            Reading(A, JAN + 1, power_w=1.0),
            Reading(A, JAN + 2, power_w=2.0),
            Reading(B, JAN + 3, power_w=3.0),
            Reading(A, FEB + 1, power_w=4.0),
            Reading(B, FEB + 2 * HOUR, power_w=5.0),
            Reading(A, MAR + 1, power_w=6.0),
        ]
    )
    await store.put_buckets([Bucket(A, Granularity.MONTH, JAN, energy_wh=7.0, version=1)])

    assert await store.delete_readings_before(FEB + HOUR) == 5
    assert keys(await store.readings_page(A, 0, MAR + HOUR, None, 10)) == [(A, MAR + 1)]
    assert keys(await store.readings_page(B, 0, MAR + HOUR, None, 10)) == [(B, FEB + 2 * HOUR)]
    assert await store.delete_readings_before(FEB + HOUR) == 0
    assert [b.energy_wh for b in await store.buckets([A], Granularity.MONTH, JAN, FEB)] == [7.0]

    # a late reading for a month that retention emptied is stored again
    assert keys(await store.add_readings([Reading(A, JAN + 9, power_w=9.0)])) == [(A, JAN + 9)]


async def test_migrate_twice_is_harmless(store: SeriesStore, store_url: str) -> None:
    await store.add_readings([Reading(A, JAN, power_w=1.0)])
    await store.put_buckets([Bucket(A, Granularity.DAY, JAN, energy_wh=1.0, version=1)])
    await store.migrate()

    again = series_store_from_url(store_url)  # a second replica starting up
    await again.start()
    try:
        await again.migrate()
        assert await again.readings_page(A, JAN, FEB, None, 10) == [Reading(A, JAN, power_w=1.0)]
        assert await again.add_readings([Reading(A, JAN, power_w=2.0)]) == []
        assert len(await again.buckets([A], Granularity.DAY, JAN, FEB)) == 1
    finally:
        await again.stop()


@pytest.fixture
def unreachable_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("a file where the data dir should be")
        return f"sqlite:///{blocker}/series.db"
    return "postgresql://postgres@127.0.0.1:1/et_nowhere"  # nothing listens on port 1


async def test_unreachable_url_raises_backend_unavailable(unreachable_url: str) -> None:
    store = series_store_from_url(unreachable_url)
    async with asyncio.timeout(15):
        with pytest.raises(BackendUnavailable) as caught:
            await store.start()
    assert str(caught.value).startswith(f"ET_TSDB_URL={unreachable_url} is unreachable: ")
    assert caught.value.variable == "ET_TSDB_URL"


async def test_not_a_database_file_raises_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "series.db"
    path.write_bytes(b"this is not an SQLite database, but it is long enough to look like one")
    with pytest.raises(BackendUnavailable, match="ET_TSDB_URL"):
        await series_store_from_url(f"sqlite:///{path}").start()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@127.0.0.1/et",
        "sqlite://relative/series.db",
        "redis://127.0.0.1:6379",
    ],
)
def test_unsupported_url(url: str) -> None:
    with pytest.raises(UnsupportedUrl, match="ET_TSDB_URL"):
        series_store_from_url(url)


def test_postgres_url_spellings() -> None:
    for url in (
        "postgresql://u@h:5432/db",
        "postgres://u@h:5432/db",
        "postgresql+asyncpg://u@h:5432/db",
    ):
        assert isinstance(series_store_from_url(url), PostgresSeriesStore)
