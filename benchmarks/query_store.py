"""The store the usage queries are timed on, and the timing.

A year (`days`) of one-minute readings of a few simulated homes, at least `target` readings in
all, registered through the API (so users, devices and tokens are real) but written straight
through the series store's batch write, with their buckets computed by the usage service's own
`Rollups`, exactly as its consumer would have. Built once and kept between runs: an embedded
data dir under benchmarks/.cache, or a PostgreSQL database named after its size, each with a
manifest (benchmarks/.cache/query-<mode>-<target>.json) that marks it complete.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from deploy import Deployment, create_database, database_exists
from store_limit import settle

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.services.usage.rollups import DeviceReadings, Rollups
from energy_tracker.simulator.driver import PASSWORD, Gateway, email_of, register_homes
from energy_tracker.simulator.homes import Home

INTERVAL_MS = 60_000
CHUNK_INSTANTS = 7 * 24 * 60  # a week of one home's readings per write
MAX_GAP_MS = 900_000


@dataclass
class Manifest:
    """What a complete query store holds and where."""

    mode: str
    target: int
    readings: int
    seed: int
    end_ms: int
    days: int
    homes: list[dict[str, Any]]  # {"index", "email", "device_ids"}
    data_dir: str | None = None  # embedded
    db_url: str | None = None  # postgresql

    @property
    def meters(self) -> list[str]:
        return [h["device_ids"]["meter"] for h in self.homes]


def manifest_path(cache: Path, mode: str, target: int) -> Path:
    return cache / f"query-{mode}-{target}.json"


def load_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest(**orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def homes_for(target: int, days: int, seed: int) -> list[Home]:
    """The fewest homes of the seeded population whose devices, read every minute for
    `days`, make at least `target` readings."""
    per_device = days * 86_400_000 // INTERVAL_MS
    homes: list[Home] = []
    while sum(len(h.devices) for h in homes) * per_device < target:
        homes.append(Home.create(seed, len(homes)))
    return homes


async def fill(url: str, homes: list[Home], end_ms: int, days: int, ids: dict[int, dict]) -> int:
    """Write every home's readings over `days` before `end_ms`, and their buckets."""
    store = series_store_from_url(url)
    await store.start()
    rollups = Rollups(store, MAX_GAP_MS)
    written = 0
    try:
        await store.migrate()
        start = end_ms - days * 86_400_000
        for home in homes:
            stream = home.stream(start, INTERVAL_MS)
            devices, tz = ids[home.index], ZoneInfo(home.place.timezone)
            while stream.next_ms < end_ms:
                instants = min(CHUNK_INSTANTS, (end_ms - stream.next_ms) // INTERVAL_MS)
                by_device: dict[str, list[Reading]] = defaultdict(list)
                for s in stream.take(instants):
                    device = devices[s.device]
                    by_device[device].append(
                        Reading(device, s.ts, s.power_w, s.energy_wh, s.voltage_v)
                    )
                batch = [r for rs in by_device.values() for r in rs]
                written += len(await store.add_readings(batch))
                changed = await rollups.recompute(
                    {d: DeviceReadings(rs, tz, home.place.tariff) for d, rs in by_device.items()}
                )
                await store.put_buckets(changed)
    finally:
        await store.stop()
    return written


async def build(
    mode: str,
    target: int,
    days: int,
    seed: int,
    cache: Path,
    deploy: Callable[[Path, str | None], Any],
    pg_server: str | None,
    say: Callable[[str], None],
) -> Manifest:
    """Build the store and write its manifest; `deploy(dir, db_url)` is a context manager
    that runs the services on it (for registering the homes)."""
    homes = homes_for(target, days, seed)
    end_ms = int(time.time() * 1000) // QUARTER_MS * QUARTER_MS
    data_dir = cache / f"query-{mode}-{target}"
    shutil.rmtree(data_dir, ignore_errors=True)
    db_url = None
    if pg_server is not None:
        db_url = await create_database(pg_server, f"et_bench_query_{target}")
    say(f"building the {mode} query store: {len(homes)} homes, {days} days, ≥{target:,} readings")
    began = time.monotonic()
    with deploy(data_dir, db_url) as deployment:
        async with httpx.AsyncClient(timeout=60.0) as client:
            accounts = await register_homes(Gateway(client, deployment.gateway_url), homes)
    ids = {a.home.index: a.device_ids for a in accounts}
    tsdb = db_url or f"sqlite:///{data_dir}/series.db"
    readings = await fill(tsdb, homes, end_ms, days, ids)
    await settle(tsdb)  # queries are timed on a store in its steady state, not fresh from a load
    manifest = Manifest(
        mode=mode,
        target=target,
        readings=readings,
        seed=seed,
        end_ms=end_ms,
        days=days,
        homes=[{"index": h.index, "email": email_of(h), "device_ids": ids[h.index]} for h in homes],
        data_dir=None if db_url else str(data_dir),
        db_url=db_url,
    )
    manifest_path(cache, mode, target).write_bytes(
        orjson.dumps(asdict(manifest), option=orjson.OPT_INDENT_2)
    )
    say(f"  built in {time.monotonic() - began:.0f} s: {readings:,} readings")
    return manifest


async def usable(manifest: Manifest | None, pg_server: str | None) -> bool:
    """Whether a manifest's store is still there (the database may have been dropped)."""
    if manifest is None:
        return False
    if manifest.db_url is None:
        return manifest.data_dir is not None and (Path(manifest.data_dir) / "series.db").exists()
    name = manifest.db_url.rsplit("/", 1)[1]
    return pg_server is not None and await database_exists(pg_server, name)


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2), "n": len(samples_ms)}


async def time_queries(
    deployment: Deployment, manifest: Manifest, reps: int, seed: int
) -> dict[str, Any]:
    """p50/p99 of three usage queries through the gateway, one at a time, each with its
    device, day or month drawn at random (seeded) from the stored year."""
    rng = random.Random(seed)
    end = manifest.end_ms
    first_day = end - manifest.days * 86_400_000
    async with httpx.AsyncClient(base_url=deployment.gateway_url, timeout=30.0) as client:
        auth: list[dict[str, str]] = []
        for home in manifest.homes:
            creds = {"email": home["email"], "password": PASSWORD}
            r = await client.post("/api/v1/auth/login", json=creds)
            r.raise_for_status()
            auth.append({"Authorization": f"Bearer {r.json()['access_token']}"})

        def year_by_day() -> tuple[str, dict[str, str], dict[str, str]]:
            i = rng.randrange(len(manifest.homes))
            device = rng.choice(list(manifest.homes[i]["device_ids"].values()))
            params = {"granularity": "day", "from": str(first_day), "to": str(end)}
            return f"/api/v1/devices/{device}/usage", params, auth[i]

        def day_by_hour() -> tuple[str, dict[str, str], dict[str, str]]:
            i = rng.randrange(len(manifest.homes))
            device = rng.choice(list(manifest.homes[i]["device_ids"].values()))
            day = first_day + rng.randrange(manifest.days) * 86_400_000
            params = {"granularity": "hour", "from": str(day), "to": str(day + 86_400_000)}
            return f"/api/v1/devices/{device}/usage", params, auth[i]

        def user_month_by_day() -> tuple[str, dict[str, str], dict[str, str]]:
            i = rng.randrange(len(manifest.homes))
            month = datetime.fromtimestamp((first_day + rng.randrange(end - first_day)) / 1000, UTC)
            lo = month.date().replace(day=1)
            hi = (lo + timedelta(days=32)).replace(day=1)
            params = {"granularity": "day", "from": lo.isoformat(), "to": hi.isoformat()}
            return "/api/v1/usage", params, auth[i]

        out: dict[str, Any] = {"store_readings": manifest.readings}
        for name, pick in (
            ("device_year_by_day", year_by_day),
            ("device_day_by_hour", day_by_hour),
            ("user_month_by_day", user_month_by_day),
        ):
            timings = []
            for rep in range(reps + 3):  # three to warm up
                path, params, headers = pick()
                began = time.perf_counter()
                r = await client.get(path, params=params, headers=headers)
                elapsed = (time.perf_counter() - began) * 1000
                if r.status_code != 200 or not r.json()["items"]:
                    raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                if rep >= 3:
                    timings.append(elapsed)
            out[name] = _percentiles(timings)
    return out
