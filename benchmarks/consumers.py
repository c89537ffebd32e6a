"""The bus and the consumers under live traffic: one-reading records, as live ingestion makes them.

With live devices every HTTP request and every MQTT message becomes its own bus record holding one
reading (group commit puts many records in one write, but each stays one record), so downstream of
ingestion the usage, alerts and insights consumers see one record per reading. This block leaves
HTTP and MQTT out: it enrolls `devices` devices through the API (so the consumers know them), then
publishes their readings straight onto the bus of the running deployment, through the bus adapter,
each record exactly what ingestion publishes for one reading (`readings_recorded`, keyed by the
device), round after round (every device's next reading, 10 s of device time apart), and times:

1. throughput: `rounds` rounds published as fast as the bus takes them; records/s from the first
   publish until the usage buckets count every reading (each quarter bucket's `samples`, seen on
   `usage-events`), and until the `alerts` group has consumed them all (its `et_consumer_lag`,
   from `/metrics`, at 0, and every alert probe's transitions seen on `alert-events`);
2. latency: the next rounds offered at `rate` records/s (in publishes of `chunk` records, as group
   commit would write them), each record timed from its publish returning (the 202's moment) to
   the first `usage-events` update of its quarter bucket that counts it; p50/p99, and the same from
   an alert probe's record to its `alert-events` transition.

Alert probes: the first `probes` devices have a power rule (> 1 kW) and alternate 2,000 W and 0 W,
so each of their readings is a transition; the other devices have no rule (most devices have none),
which the alerts consumer must still skip at the records' rate.

    python benchmarks/run.py --consumers-only [--modes embedded]   # this block alone
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import live
import orjson

from energy_tracker.core.bus.base import Consumer, EventBus
from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.core.events import (
    ALERT_EVENTS,
    ENERGY_READINGS,
    USAGE_EVENTS,
    Reading,
    readings_recorded,
)
from energy_tracker.simulator.driver import Gateway

INTERVAL_MS = 10_000  # device time between one device's readings
PROBE_RULE = {"metric": "power_w", "period": "instant", "op": "gt", "threshold": 1000.0}


@dataclass(frozen=True)
class ConsumerSizes:
    devices: int
    rounds: int  # throughput: every device's readings of this many rounds, as fast as possible
    rate: int  # latency: records offered a second
    latency_s: float
    probes: int = 10
    chunk: int = 100  # records a publish (what group commit writes at once under load)


@dataclass(frozen=True, slots=True)
class Sent:
    """One published record: its bucket key, its place in that bucket, when the bus had it."""

    key: tuple[str, int]  # (device, quarter start)
    samples: int  # the quarter's `samples` once it counts this record
    at: float


class Watcher:
    """Follows `usage-events` (each quarter bucket's samples, and when each count first showed)
    and `alert-events` (each transition by (device, the reading's ts)) through groups of its own."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.samples: dict[tuple[str, int], int] = {}
        # Every rise of a quarter's count: (samples, when first seen), in order.
        self.rises: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self.alerts: dict[tuple[str, int], float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, url: str) -> Watcher:
        bus = bus_from_url(url, 8)
        await bus.start()
        watcher = cls(bus)
        tag = uuid.uuid4().hex[:8]
        try:
            usage, alerts = await asyncio.gather(
                bus.subscribe(USAGE_EVENTS, f"bench-consumers-usage-{tag}"),
                bus.subscribe(ALERT_EVENTS, f"bench-consumers-alerts-{tag}"),
            )
        except BaseException:
            await bus.stop()
            raise
        watcher._tasks = [
            asyncio.create_task(watcher._watch(usage, watcher._on_usage)),
            asyncio.create_task(watcher._watch(alerts, watcher._on_alert)),
        ]
        return watcher

    def _on_usage(self, value: bytes, now: float) -> None:
        if b'"15min"' not in value:  # most updates are hours, days, months: skip the parse
            return
        data = orjson.loads(value)["data"]
        if data["granularity"] != "15min":
            return
        key = (data["device_id"], data["period_start_ms"])
        samples = data["samples"]
        if samples > self.samples.get(key, 0):
            self.samples[key] = samples
            self.rises.setdefault(key, []).append((samples, now))

    def _on_alert(self, value: bytes, now: float) -> None:
        data = orjson.loads(value)["data"]
        self.alerts.setdefault((data["device_id"], data["at_ms"]), now)

    @staticmethod
    async def _watch(consumer: Consumer, note: Callable[[bytes, float], None]) -> None:
        while True:
            messages = await consumer.poll(5000, timeout_s=0.2)
            now = time.time()
            for m in messages:
                note(m.value, now)

    def check(self) -> None:
        for task in self._tasks:
            if task.done():
                task.result()  # re-raise why the watcher stopped

    def counts(self, want: dict[tuple[str, int], int]) -> bool:
        return all(self.samples.get(k, 0) >= n for k, n in want.items())

    def delays_ms(self, sent: Sequence[Sent]) -> tuple[list[float], int]:
        """Each record's delay to the first update of its quarter that counts it; and how many
        records no update counted."""
        delays, missing = [], 0
        for s in sent:
            seen = next((t for n, t in self.rises.get(s.key, ()) if n >= s.samples), None)
            if seen is None:
                missing += 1
            else:
                delays.append((seen - s.at) * 1000)
        return delays, missing

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.stop()


class Readings:
    """The devices' readings, round by round: what each record is and where it will count."""

    def __init__(self, device_ids: Sequence[str], probes: int, first_ms: int) -> None:
        self.device_ids = list(device_ids)
        self.probes = set(self.device_ids[:probes])
        self.first_ms = first_ms
        self.per_quarter: dict[tuple[str, int], int] = {}

    def round(self, n: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[tuple[str, int], int]]]:
        """Round `n`'s records and, for each, (its quarter, the count that includes it)."""
        ts = self.first_ms + n * INTERVAL_MS
        quarter = ts // QUARTER_MS * QUARTER_MS
        records, places = [], []
        for d in self.device_ids:
            power = (2000.0 if n % 2 == 0 else 0.0) if d in self.probes else 100.0 + n % 7
            records.append(readings_recorded(d, [Reading(d, ts, power, None, None, None)]))
            key = (d, quarter)
            samples = self.per_quarter[key] = self.per_quarter.get(key, 0) + 1
            places.append((key, samples))
        return records, places


async def _publish(
    bus: EventBus, records: list[tuple[bytes, bytes]], chunk: int, rate: float | None
) -> list[float]:
    """Publish in chunks (paced at `rate` records/s, else as fast as the bus takes them); when
    the bus had each record."""
    at: list[float] = []
    began = time.monotonic()
    for i in range(0, len(records), chunk):
        if rate is not None and (wait := began + i / rate - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        part = records[i : i + chunk]
        await bus.publish(ENERGY_READINGS, part)
        at.extend([time.time()] * len(part))
    return at


async def _alerts_caught_up(
    lag: Callable[[], Any], watcher: Watcher, probes: set[tuple[str, int]], left: float
) -> float | None:
    """When the `alerts` group has nothing left to consume and every probe's transition showed;
    None when that did not happen in `left` seconds."""
    deadline = time.monotonic() + left
    while time.monotonic() < deadline:
        watcher.check()
        if probes <= watcher.alerts.keys() and (await lag()).get("alerts", 0) == 0:
            return time.time()
        await asyncio.sleep(0.1)
    return None


def _pct(values: Sequence[float], p: int) -> float | None:
    return live._pct(values, p) if len(values) > 1 else None


async def run(
    base_url: str,
    bus_url: str,
    metrics_urls: Sequence[str],
    sizes: ConsumerSizes,
    say: Callable[[str], None],
    left: Callable[[float], float],
    *,
    fleet: live.Fleet | None = None,
    first_ms: int | None = None,
    cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """This block on a running deployment; its figures. `fleet`: devices enrolled (and probes
    given their rules) by an earlier run on the same deployment; `first_ms`: the first readings'
    time (by default they end a minute ago), never inside quarters an earlier run filled;
    `cpu_s`: CPU seconds the deployment's processes have used so far, for the CPU a record costs
    (on a shared machine the rates follow the share of the cores the run gets; CPU time less so)."""
    from prometheus_client.parser import text_string_to_metric_families

    latency_rounds = max(1, round(sizes.rate * sizes.latency_s / sizes.devices))
    rounds = sizes.rounds + latency_rounds
    watching = asyncio.create_task(Watcher.start(bus_url))  # a Kafka group join takes seconds
    producer = bus_from_url(bus_url, 8)
    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=16)) as c:

        async def lag() -> dict[str, int]:
            """Records not yet consumed per group on `energy-readings`, from every `/metrics`."""
            out: dict[str, int] = {}
            for url in metrics_urls:
                text = (await c.get(url + "/metrics")).text
                for family in text_string_to_metric_families(text):
                    if family.name == "et_consumer_lag":
                        for s in family.samples:
                            if s.labels["topic"] == ENERGY_READINGS:
                                group = s.labels["group"]
                                out[group] = out.get(group, 0) + int(s.value)
            return out

        gateway = Gateway(c, base_url)
        if fleet is None:
            say(f"  bus + consumers: enrolling {sizes.devices:,} devices")
            fleet = await asyncio.wait_for(
                live.enroll(gateway, sizes.devices, uuid.uuid4().hex[:8]), left(900)
            )
            for i, device in enumerate(fleet.devices[: sizes.probes]):
                rule = {"name": f"probe {i}", "device_id": device.id, "severity": "info"}
                owner = fleet.owners[i // live.DEVICES_PER_OWNER]
                await gateway.call("POST", "/alert-rules", json=rule | PROBE_RULE, headers=owner)
        device_ids = [d.id for d in fleet.devices]
        probe_ids = device_ids[: sizes.probes]
        if first_ms is None:
            # Every reading lies in the past, the last ones a minute ago: alert rules judge
            # readings of the last 15 minutes only (alerts.power.STALE_MS).
            first_ms = int(time.time() * 1000) - 60_000 - rounds * INTERVAL_MS
        readings = Readings(device_ids, sizes.probes, first_ms)
        watcher = await asyncio.wait_for(watching, left(60))
        await producer.start()
        try:
            # -- throughput ------------------------------------------------------------------
            records: list[tuple[bytes, bytes]] = []
            for n in range(sizes.rounds):
                records += readings.round(n)[0]
            want = dict(readings.per_quarter)
            probes = {(d, first_ms + n * INTERVAL_MS) for d in probe_ids for n in range(rounds)}
            say(f"  throughput: {len(records):,} one-reading records, as fast as the bus takes")
            cpu_began = cpu_s() if cpu_s else None
            began = time.time()
            await _publish(producer, records, sizes.chunk, None)
            published = time.time()
            deadline = time.monotonic() + left(300)
            while not watcher.counts(want) and time.monotonic() < deadline:
                watcher.check()
                await asyncio.sleep(0.05)
            counted = sum(min(watcher.samples.get(k, 0), n) for k, n in want.items())
            usage_done = time.time()
            first_probes = {p for p in probes if p[1] < first_ms + sizes.rounds * INTERVAL_MS}
            alerts_done = await _alerts_caught_up(lag, watcher, first_probes, left(120))
            cpu_used = cpu_s() - cpu_began if cpu_s and cpu_began is not None else None
            throughput = {
                "records": len(records),
                "published_per_s": round(len(records) / (published - began)),
                "counted": counted,
                "records_per_s_to_buckets": round(counted / (usage_done - began)),
                "records_per_s_through_alerts": (
                    round(len(records) / (alerts_done - began)) if alerts_done else None
                ),
                # Of every process of the deployment, until the alerts group had them all.
                "cpu_ms_per_record": (
                    round(cpu_used * 1000 / len(records), 3) if cpu_used is not None else None
                ),
            }
            say(
                f"  {throughput['records_per_s_to_buckets']:,} records/s to the buckets"
                f" ({throughput['published_per_s']:,}/s published), through alerts"
                f" {throughput['records_per_s_through_alerts']}/s;"
                f" {throughput['cpu_ms_per_record']} ms of CPU a record"
            )

            # -- latency at a steady rate ----------------------------------------------------
            records, places = [], []
            for n in range(sizes.rounds, rounds):
                round_records, round_places = readings.round(n)
                records += round_records
                places += round_places
            say(f"  latency: {len(records):,} records at {sizes.rate:,}/s")
            began = time.time()
            at = await _publish(producer, records, sizes.chunk, sizes.rate)
            offered_s = time.time() - began
            sent = [Sent(key, samples, t) for (key, samples), t in zip(places, at, strict=True)]
            want = dict(readings.per_quarter)
            deadline = time.monotonic() + left(120)
            while not watcher.counts(want) and time.monotonic() < deadline:
                watcher.check()
                await asyncio.sleep(0.05)
            late_probes = probes - first_probes
            await _alerts_caught_up(lag, watcher, late_probes, left(60))
            delays, missing = watcher.delays_ms(sent)
            if missing > len(sent) // 100:
                delays = []  # a p99 of what was counted would hide what was not
            published_at = {
                (d, first_ms + n * INTERVAL_MS): at[(n - sizes.rounds) * sizes.devices + i]
                for n in range(sizes.rounds, rounds)
                for i, d in enumerate(probe_ids)
            }
            alert_delays = [
                (watcher.alerts[k] - t) * 1000
                for k, t in published_at.items()
                if k in watcher.alerts
            ]
            latency = {
                "records": len(records),
                "offered_per_s": sizes.rate,
                "achieved_per_s": round(len(records) / offered_s),
                "p50_ms_record_to_bucket": _pct(delays, 50),
                "p99_ms_record_to_bucket": _pct(delays, 99),
                "max_ms_record_to_bucket": round(max(delays), 1) if delays else None,
                "not_counted_by_end": missing,
                "alert_probes": len(published_at),
                "alert_transitions_seen": len(alert_delays),
                "p50_ms_record_to_alert": _pct(alert_delays, 50),
                "p99_ms_record_to_alert": _pct(alert_delays, 99),
            }
            say(
                f"  at {latency['achieved_per_s']:,}/s: record -> bucket p50"
                f" {latency['p50_ms_record_to_bucket']} ms, p99"
                f" {latency['p99_ms_record_to_bucket']} ms; -> alert p99"
                f" {latency['p99_ms_record_to_alert']} ms; not counted {missing}"
            )
        finally:
            await producer.stop()
            await watcher.stop()
    return {"devices": sizes.devices, "throughput": throughput, "latency": latency}
