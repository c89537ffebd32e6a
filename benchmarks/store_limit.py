"""Raw write limit of one time-series store: add N readings in batches, as the usage service does.

Readings come from `--devices` meters reporting every 10 s, in time order like live traffic, so
a 10k batch from 10k devices holds one reading per device: the worst case for a (series, ts)
key, which touches one B-tree leaf per device and batch. The figures are comparable with the
store rows of LIMITS.md. After the run the last batches are added again, to time a redelivery
(every reading already stored).

    python benchmarks/store_limit.py sqlite:///tmp/bench/series.db --reset
    python benchmarks/store_limit.py postgresql://postgres@127.0.0.1/et_bench --reset -n 2000000

--reset empties the target first (deletes the SQLite file, drops the store's PostgreSQL tables).

--reads measures the batched reads instead: one window per device (`--window-ms` wide, in the
middle of the stored span) read the old way, one `readings_around` call per device awaited in
turn as the usage rollups do, then in one `readings_around_many` call; likewise one quarter-bucket
query per device via `buckets` and in one `buckets_many` call. The readings are loaded only when
the target lacks them, so a second run with another window reuses them:

    python benchmarks/store_limit.py sqlite:///tmp/bench/reads.db --reads --reset -n 900000 \
        --devices 5000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity, SeriesStore
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.core.stores.timeseries.postgres import asyncpg_dsn
from energy_tracker.core.stores.timeseries.sqlite import sqlite_path

T = TypeVar("T")

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PERIOD_MS = 10_000


def make_readings(n: int, devices: int) -> list[Reading]:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"meter-{d}")) for d in range(devices)]
    out = []
    for i in range(n):
        device, round_ = i % devices, i // devices
        out.append(
            Reading(
                ids[device],
                START_MS + round_ * PERIOD_MS + device % PERIOD_MS,
                power_w=round(100 + i % 900 * 1.7, 1),
                energy_wh=round(round_ * 0.3 + device, 3),
                voltage_v=230.0 + device % 7,
            )
        )
    return out


def remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def reset(url: str) -> None:
    if url.startswith("sqlite:"):
        await asyncio.to_thread(remove_sqlite_files, sqlite_path(url))
        return
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("DROP TABLE IF EXISTS readings, series, buckets CASCADE")
    finally:
        await conn.close()


async def settle(url: str) -> None:
    """Bring a freshly loaded PostgreSQL store to the steady state autovacuum keeps it in: a
    bulk load leaves no statistics or visibility map behind, and reads then took ~5x longer on
    the server (bitmap heap scans, hint bits set on first touch). SQLite needs only its WAL
    checkpointed, which closing the store does."""
    if url.startswith("sqlite:"):
        return
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("VACUUM ANALYZE readings, series, buckets")
    finally:
        await conn.close()


@dataclass(frozen=True)
class StoreLimit:
    """One run: N new readings added, then the last batches added again."""

    readings: int
    total_s: float
    second_half: int
    second_half_s: float
    replayed: int
    replayed_batches: int
    replay_s: float

    @property
    def add_per_s(self) -> float:
        return self.readings / self.total_s


async def measure(
    url: str,
    n: int,
    *,
    batch: int = 10_000,
    devices: int = 10_000,
    replay: int = 10,
    reset_first: bool = False,
) -> StoreLimit:
    """Add `n` new readings in batches of `batch`, then replay the last `replay` batches;
    raises RuntimeError if deduplication miscounts."""
    readings = make_readings(n, devices)
    batches = [readings[i : i + batch] for i in range(0, len(readings), batch)]
    if reset_first:
        await reset(url)
    store = series_store_from_url(url)
    await store.start()
    try:
        await store.migrate()
        stored = 0
        began = time.perf_counter()
        half_at = began
        for number, chunk in enumerate(batches):
            if number == len(batches) // 2:
                half_at = time.perf_counter()
            stored += len(await store.add_readings(chunk))
        total_s = time.perf_counter() - began
        second_half_s = time.perf_counter() - half_at
        second_half = sum(len(b) for b in batches[len(batches) // 2 :])

        again_batches = batches[-replay:]
        began = time.perf_counter()
        again = sum([len(await store.add_readings(chunk)) for chunk in again_batches])
        replay_s = time.perf_counter() - began
    finally:
        await store.stop()

    if stored != n or again:
        raise RuntimeError(f"wrong dedup: {stored} of {n} new, {again} new on replay")
    replayed = sum(len(b) for b in again_batches)
    return StoreLimit(
        n, total_s, second_half, second_half_s, replayed, len(again_batches), replay_s
    )


@dataclass(frozen=True)
class ReadLimit:
    """One reads run: the median time of each way over the repeats, and how much came back."""

    windows: int
    readings: int  # readings returned for all windows together
    single_s: float  # one readings_around call per window
    batched_s: float  # one readings_around_many call
    buckets: int  # buckets returned for all queries together
    bucket_single_s: float  # one buckets call per device
    bucket_batched_s: float  # one buckets_many call


async def _median_s(repeat: int, work: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    """The median time of `repeat` runs of `work` (the machine is noisy), and what it returned."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = await work()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


async def measure_reads(
    url: str,
    n: int,
    *,
    devices: int = 5_000,
    window_ms: int = 900_000,
    repeat: int = 3,
    reset_first: bool = False,
) -> ReadLimit:
    """Time one window per device read one device at a time, then all in one call, and the same
    for quarter buckets; raises RuntimeError if the two ways disagree."""
    readings = make_readings(n, devices)
    ids = list(dict.fromkeys(r.device_id for r in readings[:devices]))
    first_ts, last_ts = readings[0].ts, readings[-1].ts
    start = (first_ts + last_ts - window_ms) // 2
    windows = [(d, start, start + window_ms) for d in ids]
    quarters = range(first_ts - first_ts % QUARTER_MS, last_ts + 1, QUARTER_MS)
    if reset_first:
        await reset(url)
    store = series_store_from_url(url)
    await store.start()
    try:
        await store.migrate()
        last = readings[-1]
        loaded = await store.readings_page(last.device_id, last.ts, last.ts + 1, None, 1)
        if not loaded:
            await _load(store, readings, ids, quarters)
    finally:
        await store.stop()  # SQLite checkpoints its WAL on close
    if not loaded:
        await settle(url)

    store = series_store_from_url(url)
    await store.start()
    try:
        single_s, single = await _median_s(repeat, lambda: _one_by_one(store, windows))
        batched_s, batched = await _median_s(repeat, lambda: store.readings_around_many(windows))
        q_lo, q_hi = start - start % QUARTER_MS, start + window_ms
        b_single_s, b_single = await _median_s(
            repeat, lambda: _buckets_one_by_one(store, ids, q_lo, q_hi)
        )
        b_batched_s, b_batched = await _median_s(
            repeat,
            lambda: store.buckets_many([(d, Granularity.QUARTER, q_lo, q_hi) for d in ids]),
        )
    finally:
        await store.stop()

    if single != batched or b_single != b_batched:
        raise RuntimeError("batched reads disagree with one-device reads")
    return ReadLimit(
        len(windows),
        sum(len(rows) for rows in batched.values()),
        single_s,
        batched_s,
        len(b_batched),
        b_single_s,
        b_batched_s,
    )


async def _load(
    store: SeriesStore, readings: list[Reading], ids: list[str], quarters: range
) -> None:
    """The readings in batches as the usage service writes them, and a quarter bucket per device
    and quarter of their span for the bucket reads."""
    for i in range(0, len(readings), 10_000):
        await store.add_readings(readings[i : i + 10_000])
    buckets = [
        Bucket(d, Granularity.QUARTER, q, energy_wh=1.0, samples=90, version=1)
        for d in ids
        for q in quarters
    ]
    for i in range(0, len(buckets), 10_000):
        await store.put_buckets(buckets[i : i + 10_000])


async def _one_by_one(
    store: SeriesStore, windows: list[tuple[str, int, int]]
) -> dict[str, list[Reading]]:
    """The old way: a round trip per device, awaited in turn."""
    return {d: await store.readings_around(d, lo, hi) for d, lo, hi in windows}


async def _buckets_one_by_one(store: SeriesStore, ids: list[str], lo: int, hi: int) -> list[Bucket]:
    """The old way for buckets, in `buckets_many`'s device order so the results compare."""
    return [b for d in sorted(ids) for b in await store.buckets([d], Granularity.QUARTER, lo, hi)]


async def run_reads(args: argparse.Namespace) -> None:
    try:
        result = await measure_reads(
            args.url,
            args.n,
            devices=args.devices,
            window_ms=args.window_ms,
            repeat=args.repeat,
            reset_first=args.reset,
        )
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    print(
        f"{args.url}: {result.windows} windows over {args.devices} devices, "
        f"{args.window_ms} ms wide; median of {args.repeat}"
    )
    for label, rows, single_s, batched_s in (
        ("readings", result.readings, result.single_s, result.batched_s),
        ("buckets", result.buckets, result.bucket_single_s, result.bucket_batched_s),
    ):
        print(
            f"  {label:<9} one call per device {single_s * 1000:>8,.0f} ms   "
            f"one batched call {batched_s * 1000:>7,.0f} ms   "
            f"x{single_s / batched_s:.1f}  ({rows:,} {label})"
        )


async def run(args: argparse.Namespace) -> None:
    try:
        result = await measure(
            args.url,
            args.n,
            batch=args.batch,
            devices=args.devices,
            replay=args.replay,
            reset_first=args.reset,
        )
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    half_rate = result.second_half / result.second_half_s
    print(f"{args.url}: {args.n} readings, {args.devices} devices, batches of {args.batch}")
    print(f"  add       {result.add_per_s:>10,.0f} rows/s  (all new)")
    print(f"  2nd half  {half_rate:>10,.0f} rows/s  (a larger table)")
    print(
        f"  replay    {result.replayed / result.replay_s:>10,.0f} rows/s  "
        f"({result.replayed_batches} batches, all dups)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ET_TSDB_URL: sqlite:///path/series.db or postgresql://…")
    parser.add_argument("-n", type=int, default=1_000_000, help="readings to add")
    parser.add_argument("--batch", type=int, default=10_000, help="readings an add_readings call")
    parser.add_argument("--devices", type=int, default=10_000, help="distinct device ids")
    parser.add_argument("--replay", type=int, default=10, help="last batches to add again")
    parser.add_argument("--reset", action="store_true", help="empty the target first")
    parser.add_argument("--reads", action="store_true", help="time batched reads instead of writes")
    parser.add_argument("--window-ms", type=int, default=900_000, help="--reads: window width (ms)")
    parser.add_argument("--repeat", type=int, default=3, help="--reads: runs of each way")
    args = parser.parse_args()
    asyncio.run(run_reads(args) if args.reads else run(args))


if __name__ == "__main__":
    main()
