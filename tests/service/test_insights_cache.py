"""The insights' hour cache and its consumer (group `insights`) over the real usage consumer, the
embedded bus and the SQLite series store: a device's hours are read once, and a new reading's
usage events refresh just the hours they announce. Expected values by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from energy_tracker.core.bus.base import Message
from energy_tracker.core.events import USAGE_EVENTS, Reading
from energy_tracker.services.insights.consumer import InsightsConsumer
from energy_tracker.services.insights.store import HourCache
from tests.service.usage_harness import Harness, usage_harness

QUARTER_MS = 15 * 60_000
# Monday 2 March 2026, 00:00 UTC (the household's zone is UTC: hours are plain UTC hours).
DAY_S = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())


def counter(device_id: str, start_s: int, hours: int, watts: float, total: float) -> list[Reading]:
    """A counter read every quarter for `hours` from `start_s`, starting at `total` Wh."""
    start = start_s * 1000
    readings = [Reading(device_id, start, energy_wh=total)]
    for quarter in range(start, start + hours * 3_600_000, QUARTER_MS):
        total += watts * 0.25
        readings.append(Reading(device_id, quarter + QUARTER_MS, energy_wh=total))
    return readings


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in usage_harness(tmp_path, "UTC"):
        yield h


async def test_a_new_usage_event_refreshes_the_cached_hours_without_a_full_read(
    home: Harness,
) -> None:
    # A day at 1,000 W: 24 hours of 1 kWh each.
    await home.deliver(counter(home.device_id, DAY_S, 24, 1000.0, 0.0))
    cache = HourCache(home.series, keep_hours=48)
    end = DAY_S + 30 * 3600  # to 06:00 on the 3rd
    kwh, _ = await cache.hours([home.device_id], DAY_S, end)
    assert kwh[:24] == pytest.approx([1.0] * 24)
    # 00:00 on the 3rd holds the day's closing reading, the counter not yet moved: 0 kWh
    # recorded; 01:00-05:00 nothing.
    assert kwh[24] == 0.0
    assert np.isnan(kwh[25:]).all()
    assert cache.full_reads == 1

    # The usage consumer turns two more hours at 2,000 W (2 kWh each) into buckets and
    # usage events; the insights consumer reads those events and refreshes those hours.
    events = await home.bus.subscribe(USAGE_EVENTS, "insights")
    await home.deliver(counter(home.device_id, DAY_S + 24 * 3600, 2, 2000.0, 24_000.0))
    last_hour = str((DAY_S + 25 * 3600) * 1000).encode()
    messages: list[Message] = []
    while not any(last_hour in m.value for m in messages):
        messages += await events.poll(1000, 0.5)
    before = cache.hour_reads
    assert await InsightsConsumer(home.bus, cache).handle(messages) == []
    await events.close()

    kwh, _ = await cache.hours([home.device_id], DAY_S, end)
    assert kwh[:24] == pytest.approx([1.0] * 24)
    # 00:00 and 01:00 at 2 kWh; 02:00 now holds the closing reading: 0 kWh recorded.
    assert kwh[24:27] == pytest.approx([2.0, 2.0, 0.0])
    assert np.isnan(kwh[27:]).all()
    assert cache.full_reads == 1  # no second read of the device's history
    assert cache.hour_reads > before


async def test_a_malformed_usage_event_is_rejected_with_its_reason(home: Harness) -> None:
    cache = HourCache(home.series, keep_hours=48)
    bad = Message(USAGE_EVENTS, 0, 0, b"x", b'{"not": "an event"}')
    rejected = await InsightsConsumer(home.bus, cache).handle([bad])
    assert [r.message for r in rejected] == [bad]
    assert rejected[0].reason
    assert (cache.full_reads, cache.hour_reads) == (0, 0)
