"""The floor no design can beat on this machine: the pipeline's own POST bodies parsed and
validated as ingestion does, then stored with their buckets as the usage service does, in one
process, with no HTTP and no bus in between.

What is left out is exactly what a deployment adds (the gateway, HTTP, the bus hop, the alerts
and the usage events), so "pipeline ÷ floor" says how much of the machine the pipeline's plumbing
takes. The bodies are the simulated homes' (the same seed, interval and quarters a POST as the
pipeline), stored in groups of 48 device records (large store round trips are what make the
usage consumer fast; 48 measured faster here than its 500, which leaves nothing to overlap), and
the next group is parsed while the store writes the last one (the store's thread releases the
GIL, as in the pipeline, where requests are parsed while the consumer writes); `records` are
what ingestion publishes for them, one per device and POST: the bus limit is measured on those.

    python benchmarks/floor.py sqlite:///tmp/bench/floor.db
    python benchmarks/floor.py postgresql://postgres@127.0.0.1/et_bench --homes 48
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import orjson

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.core.events import Reading, readings_recorded
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.services.ingestion.schemas import READING_BATCH, to_reading
from energy_tracker.services.usage.rollups import DeviceReadings, Rollups
from energy_tracker.simulator.driver import HomeAccount, email_of, readings_body
from energy_tracker.simulator.homes import Home, make_homes

MAX_GAP_MS = 900_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Workload:
    """The POST bodies of `homes` simulated homes, and what each home's devices are."""

    bodies: list[tuple[Home, bytes]]
    readings: int

    def records(self) -> list[tuple[bytes, bytes]]:
        """What ingestion publishes for the bodies: one record per device and POST."""
        out = []
        for _, body in self.bodies:
            by_device: dict[str, list[Reading]] = defaultdict(list)
            for item in orjson.loads(body)["readings"]:
                by_device[item["device_id"]].append(
                    Reading(item["device_id"], item["ts"], item["power_w"], item["energy_wh"])
                )
            out += [readings_recorded(d, rs) for d, rs in by_device.items()]
        return out


def workload(
    seed: int, homes: int, readings: int, quarters_per_post: int, interval_ms: int
) -> Workload:
    """At least `readings` readings, in POSTs of `quarters_per_post` quarters per home, home
    after home, as the pipeline's load sends them (device ids made up: nothing is registered)."""
    population = make_homes(seed, homes)
    accounts = [
        HomeAccount(
            h,
            email_of(h),
            "",
            {d.key: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{h.index}/{d.key}")) for d in h.devices},
        )
        for h in population
    ]
    streams = [h.stream(START_MS, interval_ms) for h in population]
    instants = quarters_per_post * QUARTER_MS // interval_ms
    bodies: list[tuple[Home, bytes]] = []
    total = 0
    while total < readings:
        for account, stream in zip(accounts, streams, strict=True):
            samples = stream.take(instants)
            bodies.append((account.home, readings_body(account, samples)))
            total += len(samples)
    return Workload(bodies, total)


async def _store(
    store: SeriesStore,
    rollups: Rollups,
    by_device: dict[str, list[Reading]],
    homes: dict[str, Home],
) -> None:
    """What the usage consumer does with a batch: readings stored, buckets recomputed."""
    readings = [r for rs in by_device.values() for r in rs]
    all_new = len(await store.add_readings(readings)) == len(readings)
    changed = await rollups.recompute(
        {
            d: DeviceReadings(rs, ZoneInfo(homes[d].place.timezone), homes[d].place.tariff)
            for d, rs in by_device.items()
        },
        all_new,
    )
    await store.put_buckets(changed)


@dataclass(frozen=True)
class Floor:
    readings: int
    seconds: float

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds


async def measure(url: str, work: Workload, batch_records: int = 48) -> Floor:
    """Parse and validate every body, then store and bucket them in groups of about
    `batch_records` device records, on a fresh store at `url`."""
    store = series_store_from_url(url)
    await store.start()
    try:
        await store.migrate()
        rollups = Rollups(store, MAX_GAP_MS)
        began = time.perf_counter()
        by_device: dict[str, list[Reading]] = defaultdict(list)
        homes: dict[str, Home] = {}
        records = 0
        storing: asyncio.Task[None] | None = None
        for i, (home, body) in enumerate(work.bodies):
            devices = set()
            for item in READING_BATCH.validate_python(orjson.loads(body))["readings"]:
                device = item.get("device_id") or ""  # every simulated reading names its device
                by_device[device].append(to_reading(item, device))
                devices.add(device)
                homes[device] = home
            records += len(devices)
            if records >= batch_records or i == len(work.bodies) - 1:
                if storing is not None:
                    await storing
                storing = asyncio.create_task(_store(store, rollups, by_device, dict(homes)))
                by_device, records = defaultdict(list), 0
        if storing is not None:
            await storing
        seconds = time.perf_counter() - began
    finally:
        await store.stop()
    return Floor(work.readings, seconds)


async def run(args: argparse.Namespace) -> None:
    work = workload(args.seed, args.homes, args.n, args.quarters_per_post, args.interval_ms)
    floor = await measure(args.url, work)
    print(f"{args.url}: {floor.readings:,} readings in {len(work.bodies)} bodies")
    print(f"  floor {floor.readings_per_s:>10,.0f} readings/s (parse, validate, store, buckets)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ET_TSDB_URL of an empty store")
    parser.add_argument("-n", type=int, default=500_000, help="readings (at least)")
    parser.add_argument("--homes", type=int, default=48)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quarters-per-post", type=int, default=9)
    parser.add_argument("--interval-ms", type=int, default=10_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
