"""Raw readings are kept for ET_RETENTION_DAYS; buckets forever.

Ingestion refuses readings older than the window, but a reading accepted at its very edge must
still find the reading before it when its quarter is recomputed, or that quarter would lose the
energy of the segment between them. So the raw series is pruned one day behind the window.
"""

from __future__ import annotations

from energy_tracker.core.loops import PruneTask
from energy_tracker.core.stores.timeseries.base import SeriesStore

DAY_MS = 86_400_000
MARGIN_MS = DAY_MS
EVERY_S = 3600.0


class RetentionTask(PruneTask):
    """Deletes raw readings past the retention window now, and then every `every_s` seconds."""

    what = "raw reading(s) past the retention window"

    def __init__(self, series: SeriesStore, retention_days: int, every_s: float = EVERY_S) -> None:
        super().__init__(every_s)
        self.series = series
        self.retention_ms = retention_days * DAY_MS

    def cutoff(self, now_ms: int) -> int:
        """Readings with ts before this are deleted."""
        return now_ms - self.retention_ms - MARGIN_MS

    async def prune_at(self, now_ms: int) -> int:
        return await self.series.delete_readings_before(self.cutoff(now_ms))
