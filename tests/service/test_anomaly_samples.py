"""The alerts' anomaly samples on a real SQLite series store (services/alerts/anomaly.py): a
load switched on is scored from the hour and quarter buckets as the usage service stores them, and
`HourlySamples` answers again from what it kept until the clock's hour changes."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from energy_tracker.core.stores.timeseries.base import Bucket, Granularity
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.alerts.anomaly import HourlySamples, Scope

HOUR_MS, QUARTER_MS = 3_600_000, 900_000
END = 1_780_002_000_000 // HOUR_MS * HOUR_MS  # a whole UTC hour
DAYS = 30


def buckets(first_ms: int, end_ms: int, quarter_wh: float) -> list[Bucket]:
    """Quarters of `quarter_wh` and the hours they add up to."""
    q = [
        Bucket("meter", Granularity.QUARTER, t, quarter_wh, 0.0, 1)
        for t in range(first_ms, end_ms, QUARTER_MS)
    ]
    h = [
        Bucket("meter", Granularity.HOUR, t, 4 * quarter_wh, 0.0, 4)
        for t in range(first_ms, end_ms, HOUR_MS)
    ]
    return q + h


async def test_a_load_left_on_scores_and_the_answer_is_kept_for_the_hour(tmp_path: Path) -> None:
    store = SqliteSeriesStore(tmp_path / "series.db")
    await store.start()
    try:
        await store.migrate()
        # 30 days of 200 W (50 Wh a quarter), then 2.2 kW (550 Wh) for the last 6 hours.
        await store.put_buckets(buckets(END - DAYS * 24 * HOUR_MS, END - 6 * HOUR_MS, 50.0))
        await store.put_buckets(buckets(END - 6 * HOUR_MS, END, 550.0))
        scope = Scope({"meter": 1.0}, ZoneInfo("UTC"), None)
        samples_of = HourlySamples(store)
        # The 3 hours judged (the rule's look-back): each quarter 2.0 kW above the highest of its
        # time of day (0.2 kW), more than the 1 kW margin (no quarter before went above its
        # highest), at hours usually quiet: usage at an unusual hour. Score: (2.2 - 0.2) kW
        # over the 0.05 spread floor = 40, at each of the 3 hours' ends.
        first = await samples_of(scope, END - 3 * HOUR_MS, END)
        assert first == [(END - 2 * HOUR_MS, 40.0), (END - HOUR_MS, 40.0), (END, 40.0)]
        # The load goes off in the stored hours: within the same clock hour, the kept answer.
        await store.put_buckets(buckets(END - 6 * HOUR_MS, END, 50.0))
        assert await samples_of(scope, END - 3 * HOUR_MS, END + 60_000) == first
        # The next hour reads the store again (its 3 hours: 2 stored, 1 without data): nothing
        # is left to find.
        later = await samples_of(scope, END - 2 * HOUR_MS, END + HOUR_MS)
        assert [score for _, score in later] == [0.0, 0.0, 0.0]
    finally:
        await store.stop()
