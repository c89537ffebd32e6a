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
    readings: Sequence[Reading], seen: Mapping[str, Seen], now_ms: int, max_gap_ms: int
) -> list[tuple[int, float]]:
    """The owner's total power at each of these readings (in time order): each device's newest
    power, leaving out devices not heard from within `max_gap_ms` (off, or gone), and readings
    too old to judge (STALE_MS)."""
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
            w or 0.0 for ts, w in latest.values() if ts is not None and ts >= r.ts - max_gap_ms
        )
        samples.append((r.ts, total))
    return samples
