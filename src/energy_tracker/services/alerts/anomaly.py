"""Rules on anomalies (`"metric": "anomaly"`): the core's detector (`core.anomalies`, the one the
insights report) over the whole hours (and their quarters) of the rule's device, or of all its
household's devices summed. Each hour that ends is one observation, the highest score of the
anomalies covering it (0: none), which the rule's threshold judges like any other value: an
alert opens when the detector flags the hour and resolves at the first hour it no longer does.
Live (on hour usage events) and in a rule preview alike. Days off are weekends and the public
holidays of the household's country, as in the insights."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from energy_tracker.core.anomalies import SCORES_HISTORY_H, hour_scores
from energy_tracker.core.hours import HOUR_S, calendar_of, hour_series, quarter_series
from energy_tracker.core.stores.timeseries.base import SeriesStore

HOUR_MS = HOUR_S * 1000


@dataclass(frozen=True, slots=True)
class Scope:
    """What a rule on anomalies judges: these devices' hours times their weights, added up (a
    household's consumption, each kWh once), with the days of `zone` and the public holidays
    of `country` (None: weekends only)."""

    weights: dict[str, float]
    zone: ZoneInfo
    country: str | None


async def anomaly_samples(
    store: SeriesStore, scope: Scope, start_ms: int, end_ms: int
) -> list[tuple[int, float]]:
    """(end of the hour in ms, score) of each whole hour starting at or after `start_ms` that
    ended by `end_ms`, judged from the hours before it (SCORES_HISTORY_H of them)."""
    first = -(-start_ms // HOUR_MS) * HOUR_S
    end = end_ms // HOUR_MS * HOUR_S
    if end <= first or not scope.weights:
        return []
    lo = first - SCORES_HISTORY_H * HOUR_S
    kwh, _ = await hour_series(store, scope.weights, lo, end)
    quarters = await quarter_series(store, scope.weights, lo, end)
    judged = (first - lo) // HOUR_S
    cal = calendar_of(lo, kwh.size, scope.zone, scope.country)
    scores = hour_scores(kwh, cal, judged, quarters)
    return [((lo + (i + 1) * HOUR_S) * 1000, float(scores[i])) for i in range(judged, kwh.size)]


class HourlySamples:
    """`anomaly_samples` of one store, kept until the clock's hour changes. Every usage batch of
    a device under an anomaly rule asks again (its hour bucket changed), while the answer can
    only change for hours the rule's state has judged already (an hour is judged once, at the
    first ask after it ends) or when a new hour ends; and each answer reads 12 weeks of hours
    and their quarter hours (about a second on SQLite under load)."""

    def __init__(self, store: SeriesStore) -> None:
        self.store = store
        self._hour = -1
        self._kept: dict[tuple[object, ...], list[tuple[int, float]]] = {}

    async def __call__(self, scope: Scope, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        hour = end_ms // HOUR_MS
        if hour != self._hour:
            self._hour, self._kept = hour, {}
        key = (
            tuple(sorted(scope.weights.items())),
            scope.zone.key,
            scope.country,
            -(-start_ms // HOUR_MS),
            hour,
        )
        if key not in self._kept:
            self._kept[key] = await anomaly_samples(self.store, scope, start_ms, end_ms)
        return self._kept[key]
