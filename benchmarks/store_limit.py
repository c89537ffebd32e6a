"""Raw write limit of one time-series store: add N readings in batches, as the usage service does.

Readings come from `--devices` meters reporting every 10 s, in time order like live traffic, so
a 10k batch from 10k devices holds one reading per device: the worst case for a (series, ts)
key, which touches one B-tree leaf per device and batch. The figures are comparable with the
store rows of LIMITS.md. After the run the last batches are added again, to time a redelivery
(every reading already stored).

    python benchmarks/store_limit.py sqlite:///tmp/bench/series.db --reset
    python benchmarks/store_limit.py postgresql://postgres@127.0.0.1/et_bench --reset -n 2000000

--reset empties the target first (deletes the SQLite file, drops the store's PostgreSQL tables).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.core.stores.timeseries.postgres import asyncpg_dsn
from energy_tracker.core.stores.timeseries.sqlite import sqlite_path

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
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
