"""The time-series port: raw readings (deduplicated on device and ts) and usage buckets.

Timestamps are epoch milliseconds, UTC. A bucket is keyed by (device, granularity, period start);
its period start is the UTC instant the period begins (for day and month, the device's local
midnight), so a bucket needs no time zone to be found again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from energy_tracker.core.events import Reading


class Granularity(StrEnum):
    QUARTER = "15min"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(slots=True)
class Bucket:
    """Usage of one device over one period."""

    device_id: str
    granularity: Granularity
    start: int  # epoch ms of the period start
    energy_wh: float = 0.0
    cost: float = 0.0
    samples: int = 0
    power_samples: int = 0
    power_sum_w: float = 0.0
    min_power_w: float | None = None
    max_power_w: float | None = None
    version: int = 0

    @property
    def avg_power_w(self) -> float | None:
        return self.power_sum_w / self.power_samples if self.power_samples else None

    def same_values(self, other: Bucket) -> bool:
        """True when both describe the same usage (versions aside)."""
        return (
            round(self.energy_wh, 6) == round(other.energy_wh, 6)
            and round(self.cost, 9) == round(other.cost, 9)
            and self.samples == other.samples
            and self.power_samples == other.power_samples
            and round(self.power_sum_w, 6) == round(other.power_sum_w, 6)
            and self.min_power_w == other.min_power_w
            and self.max_power_w == other.max_power_w
        )


class SeriesStore(ABC):
    """Raw readings and buckets; adapters: sqlite (embedded) and postgres (Timescale if present)."""

    @abstractmethod
    async def start(self) -> None:
        """Connect; raise BackendUnavailable naming ET_TSDB_URL when unreachable."""

    @abstractmethod
    async def stop(self) -> None:
        """Close connections."""

    @abstractmethod
    async def migrate(self) -> None:
        """Create or upgrade the schema; safe to run again."""

    @abstractmethod
    async def add_readings(self, readings: Sequence[Reading]) -> list[Reading]:
        """Store readings, ignoring any (device_id, ts) already stored; return those that were new.

        A reading repeated inside `readings` counts once (the first wins).
        """

    @abstractmethod
    async def readings_around(self, device_id: str, start: int, end: int) -> list[Reading]:
        """Readings with start <= ts < end, plus the last one before start and the first one
        at or after end (when they exist), in time order: what integration over [start, end)
        needs."""

    @abstractmethod
    async def readings_page(
        self, device_id: str, start: int, end: int, after_ts: int | None, limit: int
    ) -> list[Reading]:
        """Up to `limit` readings with start <= ts < end and ts > after_ts, in time order."""

    @abstractmethod
    async def buckets(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        """Buckets of these devices with start <= period start < end, ordered by device, start."""

    @abstractmethod
    async def put_buckets(self, buckets: Sequence[Bucket]) -> None:
        """Insert or replace buckets (whole rows, version included)."""

    @abstractmethod
    async def delete_readings_before(self, ts: int) -> int:
        """Drop raw readings older than `ts` (retention); buckets stay. Returns how many."""
