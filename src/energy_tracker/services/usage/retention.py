"""Raw readings are kept for ET_RETENTION_DAYS; buckets forever.

Ingestion refuses readings older than the window, but a reading accepted at its very edge must
still find the reading before it when its quarter is recomputed, or that quarter would lose the
energy of the segment between them. So the raw series is pruned one day behind the window.
"""

from __future__ import annotations

import logging
import time

from energy_tracker.core.loops import Stopper, every
from energy_tracker.core.stores.timeseries.base import SeriesStore

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MARGIN_MS = DAY_MS
EVERY_S = 3600.0


class RetentionTask:
    """Deletes raw readings past the retention window now, and then every `every_s` seconds."""

    def __init__(self, series: SeriesStore, retention_days: int, every_s: float = EVERY_S) -> None:
        self.series = series
        self.retention_ms = retention_days * DAY_MS
        self.every_s = every_s
        self._stopper = Stopper()

    def cutoff(self, now_ms: int) -> int:
        """Readings with ts before this are deleted."""
        return now_ms - self.retention_ms - MARGIN_MS

    async def prune(self, now_ms: int | None = None) -> int:
        """One pass; returns how many readings were deleted."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        deleted = await self.series.delete_readings_before(self.cutoff(now))
        if deleted:
            log.info("retention: deleted %d raw reading(s)", deleted)
        return deleted

    async def run(self) -> None:
        """Prune now and every `every_s` until stopped; a store outage waits for the next round."""

        def failed(exc: Exception) -> None:
            log.warning("retention: pruning failed (%s); retrying later", exc)

        await every(self.every_s, self._stopper, self.prune, failed)

    def stop(self) -> None:
        """End `run` at its next wait."""
        self._stopper.stop()
