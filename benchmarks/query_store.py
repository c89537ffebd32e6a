"""The store the usage queries are timed on, and the timing.

The shape issue 16 measured: one user's household of 100 meters (more if `target` needs them),
each read every 5 minutes for a year (`days`), at least `target` readings in all. The meters'
power comes from the seeded simulated homes (each meter is one device of one of them), and
every meter is a plain top-level load (the default role), so the household's consumption is
the sum of 100 loads and its breakdown names each. The account and its devices are registered
through the API (so users, devices and tokens are real); the readings are written straight
through the series store's batch write, with their buckets computed by the usage service's own
`Rollups`, exactly as its consumer would have. Built once and kept between runs: an embedded
data dir under benchmarks/.cache, or a PostgreSQL database named after its size and this
checkout (two checkouts sharing a server never drop each other's), each with a manifest
(benchmarks/.cache/query-<mode>-<target>.json) that marks it complete.
"""

from __future__ import annotations

import hashlib
import math
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
from energy_tracker.simulator.driver import PASSWORD, Gateway
from energy_tracker.simulator.homes import Home

INTERVAL_MS = 300_000  # a reading every 5 minutes
METERS = 100
CHUNK_INSTANTS = 7 * 24 * 12  # a week of readings per write
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
    interval_ms: int
    homes: list[dict[str, Any]]  # {"index", "email", "device_ids"}: one user's household
    data_dir: str | None = None  # embedded
    db_url: str | None = None  # postgresql


def manifest_path(cache: Path, mode: str, target: int) -> Path:
    return cache / f"query-{mode}-{target}.json"


def load_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest(**orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def meters_for(target: int, days: int, seed: int) -> list[tuple[Home, str]]:
    """(home, device key) of each meter: the devices of the seeded homes in order, as many as
    `METERS` or as `target` readings over `days` need, whichever is more."""
    per_device = days * 86_400_000 // INTERVAL_MS
    wanted = max(METERS, math.ceil(target / per_device))
    meters: list[tuple[Home, str]] = []
    index = 0
    while len(meters) < wanted:
        home = Home.create(seed, index)
        meters += [(home, d.key) for d in home.devices][: wanted - len(meters)]
        index += 1
    return meters


def email(seed: int) -> str:
    return f"query-store-{seed}@example.com"


async def register(gateway: Gateway, seed: int, meters: list[tuple[Home, str]]) -> dict[str, str]:
    """The household's account and its meters (each a top-level load); meter name -> id."""
    creds = {"email": email(seed), "password": PASSWORD}
    await gateway.call("POST", "/auth/register", ok=(201,), json=creds)
    token = await gateway.login(email(seed))
    auth = {"Authorization": f"Bearer {token}"}
    own = (await gateway.call("GET", "/households", headers=auth)).json()["items"][0]["id"]
    place = meters[0][0].place
    settings = {
        "name": "Query store",
        "timezone": place.timezone,
        "currency": place.currency,
        "tariff": place.tariff,
    }
    await gateway.call("PATCH", f"/households/{own}", json=settings, headers=auth)
    ids = {}
    for n in range(len(meters)):
        body = {"name": f"Meter {n:03d}", "type": "meter"}
        created = await gateway.call("POST", "/devices", json=body, headers=auth)
        ids[body["name"]] = created.json()["id"]
    return ids


async def fill(
    url: str, meters: list[tuple[Home, str]], device_ids: list[str], end_ms: int, days: int
) -> int:
    """Write every meter's readings over `days` before `end_ms`, and their buckets."""
    store = series_store_from_url(url)
    await store.start()
    rollups = Rollups(store, MAX_GAP_MS)
    written = 0
    place = meters[0][0].place
    tz = ZoneInfo(place.timezone)
    try:
        await store.migrate()
        start = end_ms - days * 86_400_000
        homes = {home.index: home for home, _ in meters}
        streams = {i: home.stream(start, INTERVAL_MS) for i, home in homes.items()}
        ids = {(home.index, key): d for (home, key), d in zip(meters, device_ids, strict=True)}
        at = start
        while at < end_ms:
            instants = min(CHUNK_INSTANTS, (end_ms - at) // INTERVAL_MS)
            by_device: dict[str, list[Reading]] = defaultdict(list)
            for i, stream in streams.items():
                for s in stream.take(instants):
                    device = ids.get((i, s.device))
                    if device is not None:
                        by_device[device].append(
                            Reading(device, s.ts, s.power_w, s.energy_wh, s.voltage_v)
                        )
            at += instants * INTERVAL_MS
            batch = [r for rs in by_device.values() for r in rs]
            written += len(await store.add_readings(batch))
            changed = await rollups.recompute(
                {d: DeviceReadings(rs, tz, place.tariff) for d, rs in by_device.items()}
            )
            await store.put_buckets(changed)
    finally:
        await store.stop()
    return written


def database_name(cache: Path, target: int) -> str:
    """This checkout's query database: named after the cache directory too, so another
    checkout's benchmark on the same server never drops it while this one reads it."""
    checkout = hashlib.sha256(str(cache.resolve()).encode()).hexdigest()[:8]
    return f"et_bench_query_{target}_{checkout}"


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
    meters = meters_for(target, days, seed)
    end_ms = int(time.time() * 1000) // QUARTER_MS * QUARTER_MS
    data_dir = cache / f"query-{mode}-{target}"
    shutil.rmtree(data_dir, ignore_errors=True)
    db_url = None
    if pg_server is not None:
        db_url = await create_database(pg_server, database_name(cache, target))
    say(
        f"building the {mode} query store: {len(meters)} meters of one household, {days} days,"
        f" ≥{target:,} readings"
    )
    began = time.monotonic()
    with deploy(data_dir, db_url) as deployment:
        async with httpx.AsyncClient(timeout=60.0) as client:
            ids = await register(Gateway(client, deployment.gateway_url), seed, meters)
    tsdb = db_url or f"sqlite:///{data_dir}/series.db"
    readings = await fill(tsdb, meters, list(ids.values()), end_ms, days)
    await settle(tsdb)  # queries are timed on a store in its steady state, not fresh from a load
    manifest = Manifest(
        mode=mode,
        target=target,
        readings=readings,
        seed=seed,
        end_ms=end_ms,
        days=days,
        interval_ms=INTERVAL_MS,
        homes=[{"index": 0, "email": email(seed), "device_ids": ids}],
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
