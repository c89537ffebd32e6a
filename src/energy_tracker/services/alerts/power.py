"""What readings say about power, as pure functions: a device's newest reading and power, and an
owner's total power over their devices at each reading."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from energy_tracker.core.events import Reading
from energy_tracker.services.alerts.models import Seen

# A reading older than this (by the service's clock) is history: it judges no power rule.
STALE_MS = 15 * 60 * 1000


def heard(readings: Sequence[Reading]) -> Seen:
    """What a batch of one device's readings (in time order) says about it."""
    powered = [r for r in readings if r.power_w is not None]
    last_power = powered[-1] if powered else None
    return Seen(
        readings[-1].ts,
        last_power.power_w if last_power else None,
        last_power.ts if last_power else None,
    )


def summed_power(
    readings: Sequence[Reading],
    seen: Mapping[str, Seen],
    now_ms: int,
    max_gap_ms: int,
    weights: Mapping[str, float],
) -> list[tuple[int, float]]:
    """The home's consumption power at each of these readings (in time order): each device's
    newest power, weighed by its factor in the consumption formula (`Layout.weights`: a grid
    meter, production +1, a battery -1, sub-meters behind a meter 0), leaving out devices not
    heard from within `max_gap_ms` (off, or gone), and readings too old to judge (STALE_MS)."""
    latest = {d: (s.power_ts, s.power_w) for d, s in seen.items() if s.power_ts is not None}
    samples = []
    for r in readings:
        if r.power_w is None:
            continue
        known = latest.get(r.device_id)
        if known is None or known[0] is None or known[0] <= r.ts:
            latest[r.device_id] = (r.ts, r.power_w)
        if r.ts < now_ms - STALE_MS:
            continue
        total = sum(
            weights.get(d, 0.0) * (w or 0.0)
            for d, (ts, w) in latest.items()
            if ts is not None and ts >= r.ts - max_gap_ms
        )
        samples.append((r.ts, total))
    return samples
