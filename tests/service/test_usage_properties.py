"""The usage consumer over the real embedded stores, property-tested (Hypothesis): the same
readings delivered in any order, in any chunks, with any duplicates and replays, end in the same
buckets as delivered once in order."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity
from tests.service.usage_harness import usage_harness
from tests.unit.test_energy_properties import T0, close, series

SPAN = 3 * 24 * 3_600_000


async def _buckets(readings: list[Reading], chunks: list[list[Reading]]) -> dict:
    """Every bucket of the device after delivering `chunks`, one message each."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        async for h in usage_harness(Path(tmp), "Europe/Berlin"):  # yields once, then stops it all
            for chunk in chunks:
                await h.deliver([Reading(h.device_id, r.ts, r.power_w, r.energy_wh) for r in chunk])
            for g in Granularity:
                for b in await h.series.buckets([h.device_id], g, T0 - 86_400_000, T0 + 2 * SPAN):
                    if b.samples or b.energy_wh:  # a bucket emptied by a later message is kept
                        out[(g, b.start)] = (b.energy_wh, b.samples, b.max_power_w)
    return out


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(series(), st.randoms(use_true_random=False))
def test_any_order_chunking_and_duplication_gives_the_same_buckets(
    readings: list[Reading], rnd: random.Random
) -> None:
    shuffled = readings + rnd.sample(readings, k=rnd.randint(0, len(readings)))
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.sample(range(1, len(shuffled)), k=min(4, len(shuffled) - 1)))
    chunks = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    chunks.append(chunks[0])  # a replay
    in_order = asyncio.run(_buckets(readings, [readings]))
    got = asyncio.run(_buckets(readings, chunks))
    assert got.keys() == in_order.keys()
    for key, (energy, *rest) in in_order.items():
        assert close(got[key][0], energy), key  # sums in another order differ in the last bits
        assert got[key][1:] == tuple(rest), key
