"""The soak: the benchmark's pipeline load held at half its measured rate for 30 minutes, to see
what only time shows: memory that keeps growing, and consumers that fall further behind.

The load is the benchmark's own (load.py: simulated homes POST their readings in batches
through the gateway, from several load processes), paced to `--rate` readings/s (default: half
the `embedded` pipeline rate in benchmarks/results/latest.json). Every minute the soak samples
each process's resident memory (VmRSS) and every consumer group's lag (the sum of
`et_consumer_lag` over its partitions, from `/metrics`); after the load it waits, bounded, until
every home's buckets count every reading it sent, and reports how long that took.

Results: benchmarks/results/soak.json and soak.md, and the table in README.md between the soak
markers.

    python benchmarks/soak.py                 # make soak: 30 minutes, embedded
    python benchmarks/soak.py --minutes 2     # a short run, to prove the script works
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deploy
import httpx
import load
import orjson
import run
from prometheus_client.parser import text_string_to_metric_families

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.simulator.driver import Gateway, HomeAccount, register_homes
from energy_tracker.simulator.homes import make_homes

README_MARKERS = ("<!-- soak:start -->", "<!-- soak:end -->")
SAMPLE_EVERY_S = 60.0
CYCLE_S = 20.0  # load is built and sent in slices this long, so no worker holds 30 minutes
DRAIN_LIMIT_S = 900.0


@dataclass
class Sample:
    """One minute's look at the deployment."""

    minute: float
    sent: int
    rss_mb: dict[str, float | None]
    lag: dict[str, int]


@dataclass
class Soak:
    rate: float
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    loaded_s: float | None = None
    drained_s: float | None = None


async def consumer_lag(client: httpx.AsyncClient, deployment: deploy.Deployment) -> dict[str, int]:
    """Records not yet consumed, per consumer group (summed over topics and partitions), from
    the `/metrics` of every process that serves one."""
    lag: dict[str, int] = defaultdict(int)
    for url in deployment.metrics_urls():
        text = (await client.get(url + "/metrics", timeout=30.0)).text
        for family in text_string_to_metric_families(text):
            if family.name == "et_consumer_lag":
                for s in family.samples:
                    lag[s.labels["group"]] += int(s.value)
    return dict(sorted(lag.items()))


async def sampler(
    soak: Soak, deployment: deploy.Deployment, began: float, stop: asyncio.Event
) -> None:
    """A sample now and then every SAMPLE_EVERY_S until `stop` (and one when it is set)."""
    async with httpx.AsyncClient() as client:
        while True:
            deployment.check_alive()
            soak.samples.append(
                Sample(
                    minute=round((time.monotonic() - began) / 60, 2),
                    sent=soak.sent,
                    rss_mb={p.name: p.rss_mb() for p in deployment.procs},
                    lag=await consumer_lag(client, deployment),
                )
            )
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
            except TimeoutError:
                pass


async def drive(
    deployment: deploy.Deployment, args: argparse.Namespace, soak: Soak, clock: run.Clock
) -> None:
    """Register the homes, hold the load for `args.minutes`, then wait until every reading is
    counted; the seconds of load and of the drain after it go into `soak`."""
    homes = make_homes(run.SEED, args.homes)
    full_quarter = QUARTER_MS // run.INTERVAL_MS
    per_round = sum(len(h.devices) for h in homes) * args.quarters_per_post * full_quarter
    seconds = args.minutes * 60
    # Every reading lies in the past (ingestion refuses those more than 5 minutes ahead): the
    # homes' streams start as far back as all the rounds the soak can send reach.
    rounds_at_most = math.ceil(soak.rate * seconds / per_round) + 2
    post_ms = args.quarters_per_post * QUARTER_MS
    start_ms = int(time.time() * 1000) // QUARTER_MS * QUARTER_MS - rounds_at_most * post_ms
    fleet: load.Fleet | None = None
    expected: dict[int, int] = defaultdict(int)
    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=8)) as client:
        gateway = Gateway(client, deployment.gateway_url)
        clock.say(f"registering {len(homes)} homes")
        accounts: list[HomeAccount] = await register_homes(gateway, homes)
        try:
            fleet = load.Fleet(
                [
                    load.WorkerSpec(
                        base_url=deployment.gateway_url,
                        seed=run.SEED,
                        homes=[
                            load.HomeLoad(a.home.index, a.token, a.device_ids)
                            for a in accounts[w :: args.workers]
                        ],
                        start_ms=start_ms,
                        interval_ms=run.INTERVAL_MS,
                        quarters_per_post=args.quarters_per_post,
                        concurrency=args.concurrency,
                    )
                    for w in range(args.workers)
                ]
            )
            clock.say(f"soaking at {soak.rate:,.0f} readings/s for {args.minutes:g} min")
            began = time.monotonic()
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler(soak, deployment, began, stop))
            rounds_sent = 0
            try:
                while (elapsed := time.monotonic() - began) < seconds:
                    # Whole rounds (one POST per home), as many as keep the readings sent on the
                    # target line by the end of this slice; each slice paced to land on it.
                    slice_end = min(seconds, elapsed + CYCLE_S)
                    due = math.floor(soak.rate * slice_end / per_round) - rounds_sent
                    if due <= 0:
                        await asyncio.sleep(slice_end - elapsed)
                        continue
                    readings = await asyncio.to_thread(fleet.build, due, 120)
                    left = max(1.0, began + slice_end - time.monotonic())
                    sent = await asyncio.to_thread(fleet.run, readings / left, clock.left())
                    rounds_sent += due
                    for s in sent:
                        expected[s.home] += s.readings
                        soak.sent += s.readings
                    deployment.check_alive()
                loaded = time.monotonic() - began
                soak.loaded_s = loaded
                clock.say(f"load done: {soak.sent:,} readings in {loaded:,.0f} s; draining")
                # The access tokens of registration have expired by now (the load processes
                # renew their own): counting needs fresh ones.
                for account in accounts:
                    account.token = await gateway.login(account.email)
                drain_began = time.monotonic()
                drain_clock = run.Clock(DRAIN_LIMIT_S / 2)
                await run.wait_counted(gateway, accounts, expected, drain_clock)
                drained = time.monotonic() - drain_began
                soak.drained_s = drained
            finally:
                stop.set()
                await sampling
        finally:
            if fleet is not None:
                fleet.close()


def _growth(samples: list[Sample], name: str) -> str:
    """A process's RSS from the first minute of load to the last sample, and the change."""
    values = [v for s in samples if (v := s.rss_mb.get(name)) is not None]
    if len(values) < 2:
        return "n/a"
    first, last = values[1] if len(values) > 2 else values[0], values[-1]
    return f"{first:,.0f} → {last:,.0f} ({last - first:+,.0f})"


def table(result: dict[str, Any]) -> str:
    samples = [Sample(**s) for s in result["samples"]]
    groups = sorted({g for s in samples for g in s.lag})
    names = list(samples[0].rss_mb) if samples else []
    head = ["minute", "readings sent", *(f"RSS {n}, MiB" for n in names)]
    head += [f"lag {g}" for g in groups]
    if result["error"]:
        outcome = f"it failed: {result['error']}"
    else:
        outcome = f"every one counted {result['drain_seconds']:,.0f} s after the load stopped"
    lines = [
        f"Soak of commit {result['machine']['commit']}, {result['measured_at']}, mode "
        f"`{result['mode']}`: {result['offered_readings_per_s'] or 0:,} readings/s offered "
        f"(target {result['target_readings_per_s']:,}) for "
        f"{(result['load_seconds'] or 0) / 60:.1f} min, {result['readings']:,} readings; "
        f"{outcome}. RSS growth (minute 1 → end): "
        + ", ".join(f"{n} {_growth(samples, n)} MiB" for n in names)
        + f". Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, shared "
        "with other work while it ran.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in samples:
        row = [f"{s.minute:g}", f"{s.sent:,}"]
        row += [f"{s.rss_mb[n]:,.0f}" if s.rss_mb.get(n) is not None else "-" for n in names]
        row += [f"{s.lag.get(g, 0):,}" for g in groups]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def default_rate() -> float:
    """Half the embedded pipeline rate of the last full benchmark run."""
    results = orjson.loads((run.RESULTS / "latest.json").read_bytes())
    embedded = next(r for r in results if r["mode"] == run.EMBEDDED)
    return float(embedded["pipeline_readings_per_s"]) / 2


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    clock = run.Clock(args.minutes * 60 + DRAIN_LIMIT_S)
    soak = Soak(rate=args.rate or default_rate())
    workdir = Path(tempfile.mkdtemp(prefix="et-soak-"))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    host = run.machine()  # now: the commit that runs, not the one checked out at the end
    error = None
    try:
        async with run.app_deployment(args.mode, args, workdir, deploy.new_secret(), clock) as (
            deployment,
            _,
        ):
            await drive(deployment, args, soak, clock)
    except Exception as exc:  # what was sampled until then is still worth keeping
        error = f"{type(exc).__name__}: {exc}"
        clock.say(f"the soak failed: {error}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            clock.say(f"logs and data kept in {workdir}")
    loaded = soak.loaded_s
    return {
        "mode": args.mode,
        "measured_at": when,
        "machine": host,
        "target_readings_per_s": round(soak.rate),
        "offered_readings_per_s": round(soak.sent / loaded) if loaded else None,
        "readings": soak.sent,
        "load_seconds": round(loaded, 1) if loaded else None,
        "drain_seconds": round(soak.drained_s, 1) if soak.drained_s is not None else None,
        "error": error,
        "samples": [s.__dict__ for s in soak.samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--rate", type=float, help="readings/s (default: half the benchmark's)")
    parser.add_argument("--mode", default=run.EMBEDDED, choices=[run.EMBEDDED, run.KAFKA])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--homes", type=int, default=48, help="simulated homes")
    parser.add_argument("--quarters-per-post", type=int, default=9, help="per home and POST")
    parser.add_argument("--workers", type=int, default=2, help="load processes")
    parser.add_argument("--concurrency", type=int, default=2, help="POSTs in flight a process")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data")
    args = parser.parse_args()
    gc.set_threshold(50_000)  # as the benchmark does: the bodies are millions of objects
    result = asyncio.run(main_async(args))
    markdown = table(result)
    print(markdown)
    short = args.minutes < 30
    name = "soak-short" if short else "soak"
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    (run.RESULTS / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (run.RESULTS / f"{name}.md").write_text(markdown)
    if result["error"]:
        raise SystemExit(1)
    if not short:
        run.update_readme(markdown, README_MARKERS)


if __name__ == "__main__":
    main()
