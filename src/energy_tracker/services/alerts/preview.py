"""When a rule would have fired: the rule engine (`rules.run`) fed with a device's stored
history instead of live messages, so the preview and the live alerts cannot disagree on what a
threshold, a hysteresis, a `for` wait or a cooldown does.

The observations are those the consumer would have made: each reading's power at its time;
energy or cost so far in the period after each 15-minute quarter (zero when a period ends, as
the periodic check observes it); for silence, how long the device had been quiet, as the
once-a-second check would have seen it once it passed the threshold and again after `for_s`,
and zero when the next reading came (from the window's first reading on).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from energy_tracker.core.energy import period_end, period_start
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Granularity, SeriesStore
from energy_tracker.services.alerts.anomaly import Scope, anomaly_samples
from energy_tracker.services.alerts.rules import Change, Condition, EvalState, run

PREVIEW_DAYS = 7
_PAGE = 10_000
_QUARTER_MS = 900_000
CHECK_MS = 1000  # how often the live service checks silence


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert the rule would have raised."""

    started_at: int  # epoch ms
    resolved_at: int | None  # None: still firing at the end of the window
    peak_value: float


async def _readings(store: SeriesStore, device_id: str, start: int, end: int) -> list[Reading]:
    out: list[Reading] = []
    after = None
    while page := await store.readings_page(device_id, start, end, after, _PAGE):
        out += page
        if len(page) < _PAGE:
            break
        after = page[-1].ts
    return out


def _silence_samples(
    readings: list[Reading], end: int, threshold_s: float, for_ms: int
) -> list[tuple[int, float]]:
    """Silences counted from the first reading of the window on: before it, the device may not
    have existed yet (the live rule counts from its own creation, which a draft does not have)."""
    samples: list[tuple[int, float]] = []
    if not readings:
        return samples
    last = readings[0].ts
    for ts in [*(r.ts for r in readings[1:]), None]:
        gap_end = end if ts is None else ts
        first = last + int(threshold_s * 1000) + CHECK_MS
        for at in (first, first + for_ms):
            if at < gap_end:
                samples.append((at, (at - last) / 1000))
        if ts is not None:
            samples.append((ts, 0.0))
            last = ts
    return samples


async def _period_samples(
    store: SeriesStore,
    device_id: str,
    metric: str,
    period: str,
    zone: ZoneInfo,
    start: int,
    end: int,
) -> list[tuple[int, float]]:
    granularity = Granularity(period)
    samples: list[tuple[int, float]] = []
    current, so_far = None, 0.0
    for bucket in await store.buckets([device_id], Granularity.QUARTER, start, end):
        begins = period_start(bucket.start, granularity, zone)
        if begins != current:
            if current is not None:
                samples.append((period_end(current, granularity, zone), 0.0))
            current, so_far = begins, 0.0
        so_far += bucket.energy_wh / 1000 if metric == "energy_kwh" else bucket.cost
        samples.append((min(bucket.start + _QUARTER_MS, end), so_far))
    samples.sort(key=lambda s: s[0])
    return samples


async def preview(
    store: SeriesStore,
    device_id: str,
    zone: ZoneInfo,
    metric: str,
    period: str,
    condition: Condition,
    start: int,
    end: int,
    country: str | None = None,
) -> tuple[list[Episode], int]:
    """The alerts a rule over `device_id` would have raised in [start, end), and how many
    observations it judged; `country`: its household's, for the anomalies' public holidays."""
    if metric == "power_w":
        rows = await _readings(store, device_id, start, end)
        samples = [(r.ts, r.power_w) for r in rows if r.power_w is not None]
    elif metric == "silence":
        rows = await _readings(store, device_id, start, end)
        samples = _silence_samples(rows, end, condition.threshold, condition.for_ms)
    elif metric == "anomaly":
        samples = await anomaly_samples(store, Scope({device_id: 1.0}, zone, country), start, end)
    else:
        samples = await _period_samples(store, device_id, metric, period, zone, start, end)
    episodes: list[Episode] = []
    opened: tuple[int, float] | None = None
    for step in run(condition, EvalState(), samples):
        if step.change is Change.FIRED:
            opened = (step.at, step.value)
        elif step.change is Change.UPDATED and opened is not None:
            opened = (opened[0], condition.worse(opened[1], step.value))
        elif step.change is Change.RESOLVED and opened is not None:
            episodes.append(Episode(opened[0], step.at, opened[1]))
            opened = None
    if opened is not None:
        episodes.append(Episode(opened[0], None, opened[1]))
    return episodes, len(samples)
