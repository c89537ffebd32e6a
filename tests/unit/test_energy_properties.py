"""Properties of the energy math over generated readings (Hypothesis).

The oracle below integrates segment by segment, never through buckets: a counter segment is its
delta (its new value after a reset), spread evenly over at most the day before it closes; a power
segment is a trapezoid when no longer than max_gap, else nothing. Every property compares the
buckets to it, or to themselves cut another way.
"""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from energy_tracker.core.energy import COUNTER_SPREAD_MS, QUARTER_MS, quarter_buckets, rollup
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity

MAX_GAP = 15 * 60_000
HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, an hour (and quarter) edge
SPAN = 3 * 24 * HOUR  # readings fall in three days, so gaps over a day occur


@st.composite
def series(draw: st.DrawFn) -> list[Reading]:
    """Time-ordered readings of one device at distinct instants: all power, or all counter
    (going up, with the odd reset)."""
    instants = sorted(
        draw(st.sets(st.integers(0, SPAN - 1), min_size=2, max_size=40)),
    )
    if draw(st.booleans()):
        watts = draw(st.lists(st.floats(-5000, 5000), min_size=len(instants), max_size=40))
        return [Reading("d", T0 + t, power_w=w) for t, w in zip(instants, watts, strict=False)]
    counter, out = draw(st.floats(0, 1e6)), []
    for t in instants:
        step = draw(st.floats(0, 5000))
        counter = step if draw(st.integers(0, 19)) == 0 else counter + step  # 1 in 20 a reset
        out.append(Reading("d", T0 + t, energy_wh=counter))
    return out


def segments(readings: list[Reading]) -> list[tuple[int, int, float]]:
    """(begin, end, energy) of each segment the readings imply, by the rules, not by buckets."""
    out = []
    for a, b in pairwise(readings):
        if a.energy_wh is not None and b.energy_wh is not None:
            energy = b.energy_wh - a.energy_wh if b.energy_wh >= a.energy_wh else b.energy_wh
            out.append((max(a.ts, b.ts - COUNTER_SPREAD_MS), b.ts, energy))
        elif a.power_w is not None and b.power_w is not None and b.ts - a.ts <= MAX_GAP:
            out.append((a.ts, b.ts, (a.power_w + b.power_w) / 2 * (b.ts - a.ts) / HOUR))
    return out


def in_window(segs: list[tuple[int, int, float]], lo: int, hi: int) -> float:
    return sum(e * max(0, min(end, hi) - max(begin, lo)) / (end - begin) for begin, end, e in segs)


def quarters(readings: list[Reading], lo: int, hi: int) -> dict[int, float]:
    buckets = quarter_buckets("d", readings, lo, hi, max_gap_ms=MAX_GAP)
    return {b.start: b.energy_wh for b in buckets}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


@settings(max_examples=150, deadline=None)
@given(series())
def test_the_quarters_hold_all_the_energy_and_each_hour_its_own(readings: list[Reading]) -> None:
    end = T0 + SPAN + QUARTER_MS
    got = quarters(readings, T0, end)
    segs = segments(readings)
    assert close(sum(got.values()), sum(e for _, _, e in segs))
    for hour in range(T0, end, HOUR):
        inside = [quarter_buckets("d", readings, hour, hour + HOUR, max_gap_ms=MAX_GAP)][0]
        summed = rollup("d", Granularity.HOUR, hour, inside)
        assert close(summed.energy_wh, in_window(segs, hour, hour + HOUR))


@settings(max_examples=300, deadline=None)
@given(series(), st.integers(1, SPAN // QUARTER_MS))
def test_energy_is_conserved_across_any_split(readings: list[Reading], cut: int) -> None:
    end = T0 + SPAN + QUARTER_MS
    middle = T0 + cut * QUARTER_MS
    whole = quarters(readings, T0, end)
    parts = {**quarters(readings, T0, middle), **quarters(readings, middle, end)}
    assert whole.keys() == parts.keys()
    assert all(close(whole[q], parts[q]) for q in whole)


@settings(max_examples=200, deadline=None)
@given(series(), st.randoms(use_true_random=False))
def test_summing_buckets_in_any_order_gives_the_same_bucket(
    readings: list[Reading], rnd: random.Random
) -> None:
    buckets = quarter_buckets("d", readings, T0, T0 + SPAN + QUARTER_MS, max_gap_ms=MAX_GAP)
    shuffled = buckets[:]
    rnd.shuffle(shuffled)
    a = rollup("d", Granularity.DAY, T0, buckets)
    b = rollup("d", Granularity.DAY, T0, shuffled)
    assert close(a.energy_wh, b.energy_wh)
    assert (a.samples, a.min_power_w, a.max_power_w) == (b.samples, b.min_power_w, b.max_power_w)
