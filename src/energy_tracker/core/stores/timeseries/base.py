"""The time-series port: raw readings (deduplicated on device and ts) and usage buckets.

Timestamps are epoch milliseconds, UTC. A bucket is keyed by (device, granularity, period start);
its period start is the UTC instant the period begins (for day and month, the device's local
midnight), so a bucket needs no time zone to be found again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter

from energy_tracker.core.events import Reading


class Granularity(StrEnum):
    QUARTER = "15min"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


# Finest first: the order of `buckets_many` within a device (the values' own order is arbitrary).
_GRANULARITY_RANK = {g: rank for rank, g in enumerate(Granularity)}

Span = tuple[str, int, int]
"""(device_id, start, end) of `SeriesStore.readings_around_many`."""

BucketQuery = tuple[str, Granularity, int, int]
"""(device_id, granularity, start, end) of `SeriesStore.buckets_many`."""


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
        """Mean power over the bucket's samples; None when it has none."""
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
    async def ping(self) -> None:
        """Raise unless the store answers a trivial query (readiness)."""

    @abstractmethod
    async def migrate(self) -> None:
        """Create or upgrade the schema; safe to run again."""

    @abstractmethod
    async def add_readings(self, readings: Sequence[Reading]) -> list[Reading]:
        """Store readings, ignoring any (device_id, ts) already stored; return those that were new.

        A reading repeated inside `readings` counts once (the first wins).
        """

    @abstractmethod
    async def readings_around_many(self, windows: Sequence[Span]) -> dict[str, list[Reading]]:
        """For each (device_id, start, end): readings with start <= ts < end plus the last one
        before start and the first one at or after end (when they exist), in time order, which
        is what integration over [start, end) needs, in one round trip. A device may appear in
        several windows: its lists are merged (deduplicated, time-ordered). Devices with nothing
        come back with an empty list. An inverted window (end < start) counts as empty at start.

        Adapters normalise `windows` with `merge_windows` and shape their rows with
        `group_readings`, so the merging rules live in one place.
        """

    @abstractmethod
    async def count_readings_many(self, windows: Sequence[Span]) -> dict[str, int]:
        """For each (device_id, start, end), one window per device: how many readings it holds
        with start <= ts < end (0 for a device never seen), in one round trip. Counting is far
        cheaper than reading back readings the caller already holds (`Rollups`)."""

    async def readings_around(self, device_id: str, start: int, end: int) -> list[Reading]:
        """`readings_around_many` for one window: kept for callers that read one device, so the
        adapters hold a single implementation of the behaviour."""
        return (await self.readings_around_many([(device_id, start, end)]))[device_id]

    @abstractmethod
    async def readings_page(
        self, device_id: str, start: int, end: int, after_ts: int | None, limit: int
    ) -> list[Reading]:
        """Up to `limit` readings with start <= ts < end and ts > after_ts, in time order."""

    @abstractmethod
    async def buckets_many(self, queries: Sequence[BucketQuery]) -> list[Bucket]:
        """Buckets matching any (device_id, granularity, start, end) query (start <= period
        start < end), each bucket once, ordered by device (code points), granularity (finest
        first: 15min, hour, day, month), start, in one round trip. Unknown devices match
        nothing; a granularity may be given as its plain value ("hour").

        Adapters run the disjoint, ordered queries of `merge_bucket_queries` and keep their
        order, so uniqueness and ordering need no work of their own.
        """

    async def buckets(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        """Buckets of these devices with start <= period start < end, ordered by device, start:
        `buckets_many` with one query per device (one granularity, so the order is the same)."""
        return await self.buckets_many([(d, granularity, start, end) for d in device_ids])

    @abstractmethod
    async def summed_buckets(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        """The buckets of these devices with start <= period start < end added period by
        period (device "*", version 0), in time order: summed by the store in one indexed
        query, so a household's month by day reads its devices' day rows and sends back one
        row a day. Unknown devices add nothing."""

    @abstractmethod
    async def device_totals(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        """Each device's buckets with start <= period start < end added up (one bucket a
        device that has any, its start `start`, version 0), ordered by device: in one indexed
        query, so a household's breakdown over a month reads its loads' day rows and sends
        back one row a load, however many loads it has. Unknown devices are absent."""

    @abstractmethod
    async def put_buckets(self, buckets: Sequence[Bucket]) -> None:
        """Insert or replace buckets (whole rows, version included)."""

    @abstractmethod
    async def delete_readings_before(self, ts: int) -> int:
        """Drop raw readings older than `ts` (retention); buckets stay. Returns how many."""


def merge_windows(windows: Iterable[Span]) -> list[Span]:
    """The windows sorted by device then start, with an inverted window made empty at its start
    and a device's overlapping or touching windows merged into one, so no reading is fetched
    twice by those.

    Merging is exact: for start2 <= end1 <= end2, the last reading before start2 is either
    inside [start1, end2) or the last one before start1, and the first at or after end1 is
    either inside it or the first at or after end2, so around(start1, end2) is the union of the
    two. Windows with a gap between them stay apart (the readings in the gap are not wanted).
    """
    merged: list[Span] = []
    for device_id, start, end in sorted((d, s, max(e, s)) for d, s, e in windows):
        if merged and merged[-1][0] == device_id and start <= merged[-1][2]:
            merged[-1] = (device_id, merged[-1][1], max(merged[-1][2], end))
        else:
            merged.append((device_id, start, end))
    return merged


_BY_TS = attrgetter("ts")


def group_readings(
    windows: Sequence[Span], readings: Iterable[Reading]
) -> dict[str, list[Reading]]:
    """The result of `readings_around_many` from the readings an adapter fetched for the
    `merge_windows` windows, each window's readings in time order: every device of `windows`
    (empty when it has none), and for a device with several windows, the union deduplicated
    and time-ordered: two disjoint windows can share a neighbour, and one window's neighbour
    can lie inside the other window.
    """
    out: dict[str, list[Reading]] = {w[0]: [] for w in windows}
    for reading in readings:
        out[reading.device_id].append(reading)
    for device_id, count in Counter(w[0] for w in windows).items():
        if count > 1:  # a single window's readings are already in order and unique
            unique = {r.ts: r for r in out[device_id]}
            out[device_id] = sorted(unique.values(), key=_BY_TS)
    return out


def merge_bucket_queries(
    queries: Iterable[tuple[str, Granularity | str, int, int]],
) -> list[BucketQuery]:
    """The queries of `buckets_many` made disjoint and put in its result order: sorted by
    device, granularity rank, start; overlapping or touching ranges of one device and
    granularity merged; empty ranges dropped. Running them in this order returns every bucket
    once, already ordered."""
    keyed = sorted((d, _GRANULARITY_RANK[Granularity(g)], s, e) for d, g, s, e in queries if s < e)
    merged: list[tuple[str, int, int, int]] = []
    for device_id, rank, start, end in keyed:
        last = merged[-1] if merged else None
        if last and last[0] == device_id and last[1] == rank and start <= last[3]:
            merged[-1] = (device_id, rank, last[2], max(last[3], end))
        else:
            merged.append((device_id, rank, start, end))
    granularities = list(Granularity)
    return [(d, granularities[rank], s, e) for d, rank, s, e in merged]
