"""The live workload: many devices, each sending one reading per HTTP POST or per MQTT message.

That is how smart plugs, Shellies and meter readers send (and the shape of ThingsBoard's and
emoncms's published figures), unlike the batch pipeline, where one POST carries thousands of
readings. Measured on a running deployment:

1. idle latency: sequential single-reading POSTs with a device key, authenticated GETs of one
   small resource, and /healthz for scale; p50/p99;
2. HTTP: wrk (benchmarks/live.lua) POSTs one reading per request, each from the next of
   `devices` devices with its own key, from `connections` keep-alive connections; meanwhile a
   probe device posts one reading into a quarter of its own every PROBE_EVERY_S, timed from its
   202 to that quarter's bucket on `usage-events`. End to end: readings counted in the usage
   buckets (the owners' month buckets, through the API) over the time from the first POST to
   the count reaching what was acknowledged (or the wait running out: what was acknowledged but
   not counted by then is reported, `not_counted_by_end`);
3. MQTT: several publisher processes send one QoS 1 message per reading for the same devices to
   the deployment's broker at `mqtt_rate` messages a second together, while a probe device
   publishes one reading into a quarter of its own every PROBE_EVERY_S, timed from the broker's
   PUBACK to that bucket; end to end the same way, over what the broker acknowledged.

httpx cannot be the HTTP load generator here (one Python process tops out near the server's
own rate); wrk is installed by `scripts/ensure-tools.sh` (`make bench` and `make bench-quick`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.simulator.driver import Gateway

HERE = Path(__file__).resolve().parent
LIVE_LUA = HERE / "live.lua"
DEVICES_PER_OWNER = 1000
INTERVAL_MS = 10_000
PROBE_EVERY_S = 0.05
COUNT_EVERY_S = 0.5
"""How often the MQTT leg asks the API for the count (its end time is this close)."""
PASSWORD = "live devices, not a secret"


class Watcher(Protocol):
    """What the live workload needs of run.py's EventWatcher."""

    usage: dict[tuple[str, int], float]

    async def wait_for(
        self, seen: dict[tuple[str, int], float], keys: set[tuple[str, int]], timeout_s: float
    ) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Device:
    id: str
    key: str


@dataclass
class Fleet:
    """Owners (their Authorization headers) and their devices; the probe's owner is apart, so
    the probe's readings are not in the owners' counts."""

    owners: list[dict[str, str]]
    devices: list[Device]
    probe: Device


async def enroll(gateway: Gateway, devices: int, tag: str) -> Fleet:
    """`devices` devices of DEVICES_PER_OWNER each per owner, and the probe, through the API."""
    owners = (devices + DEVICES_PER_OWNER - 1) // DEVICES_PER_OWNER + 1
    # Few at a time: concurrent writes to the SQLite metadata store fail with "database is
    # locked" (a read transaction upgraded to a write; issue 13); this is setup, not load.
    gate = asyncio.Semaphore(4)
    signing_up = asyncio.Semaphore(1)

    async def owner(i: int) -> dict[str, str]:
        email = f"live-{tag}-{i}@example.com"
        async with signing_up:
            creds = {"email": email, "password": PASSWORD}
            await gateway.call("POST", "/auth/register", ok=(201,), json=creds)
            return {"Authorization": f"Bearer {await gateway.login(email, PASSWORD)}"}

    async def device(auth: dict[str, str], i: int) -> Device:
        async with gate:
            body = {"name": f"plug {i}", "type": "plug"}
            made = (await gateway.call("POST", "/devices", json=body, headers=auth)).json()
            return Device(made["id"], made["api_key"])

    auths = list(await asyncio.gather(*(owner(i) for i in range(owners))))
    made = list(
        await asyncio.gather(
            *(device(auths[i // DEVICES_PER_OWNER], i) for i in range(devices)),
            device(auths[-1], devices),
        )
    )
    return Fleet(auths[:-1], made[:-1], made[-1])


def idle_latency(
    base_url: str, auth: dict[str, str], device: Device, newcomers: Sequence[Device], n: int
) -> dict[str, Any]:
    """p50/p99 (ms) of `n` sequential requests of each kind, nothing else running; the first
    POST of each of `newcomers` (devices not seen before) is the credential look-up's cost."""
    api = base_url + "/api/v1"
    first = int(time.time() * 1000) - 6 * 3_600_000
    key = {"X-Device-Key": device.key}
    kinds: dict[str, Callable[[httpx.Client, int], httpx.Response]] = {
        "healthz": lambda c, i: c.get(base_url + "/healthz"),
        "get_device": lambda c, i: c.get(f"{api}/devices/{device.id}", headers=auth),
        "get_me": lambda c, i: c.get(f"{api}/users/me", headers=auth),
        "post_one_reading": lambda c, i: c.post(
            f"{api}/readings", json={"ts": first + i * INTERVAL_MS, "power_w": 50.0}, headers=key
        ),
        "post_new_device": lambda c, i: c.post(
            f"{api}/readings",
            json={"ts": first + i * INTERVAL_MS, "power_w": 50.0},
            headers={"X-Device-Key": newcomers[i % len(newcomers)].key},
        ),
    }
    out: dict[str, Any] = {}
    with httpx.Client(timeout=30.0) as client:
        for name, send in kinds.items():
            send(client, n)  # the connection, and whatever is done once, outside the timing
            times = []
            for i in range(n):
                began = time.perf_counter()
                r = send(client, i)
                times.append((time.perf_counter() - began) * 1000)
                if r.status_code >= 300:
                    raise RuntimeError(f"idle {name}: {r.status_code} {r.text[:200]}")
            out[name] = {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}
    return out


def _pct(values: Sequence[float], p: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 2)


@dataclass
class WrkResult:
    requests: int
    refused: int
    seconds: float
    p50_ms: float
    p99_ms: float


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    url: str, keys: Path, first_ms: int, seconds: float, connections: int, threads: int = 2
) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: run scripts/ensure-tools.sh")
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(LIVE_LUA), url, "--", str(keys)]
    argv += [str(first_ms), str(threads)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    text = out.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if done is None:
        raise RuntimeError(f"wrk said:\n{text}\n{out.stderr}")
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: .*timeout (\d+)", text)
    pct = {p: re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", text) for p in (50, 99)}
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}[done.group(3)]
    return WrkResult(
        requests=int(done.group(1)),
        refused=(int(refused.group(1)) if refused else 0) + (int(errors.group(1)) if errors else 0),
        seconds=float(done.group(2)) * unit,
        p50_ms=float(m.group(1)) * _UNITS_MS[m.group(2)] if (m := pct[50]) else float("nan"),
        p99_ms=float(m.group(1)) * _UNITS_MS[m.group(2)] if (m := pct[99]) else float("nan"),
    )


def _varint(n: int) -> bytes:
    """MQTT's Remaining Length: 7 bits a byte, low first, the high bit saying more follow."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _publish_share(
    port: int, device_ids: list[str], per_device: int, first_ms: int, rate: float
) -> int:
    """One publisher process: `per_device` QoS 1 messages for each device, round after round,
    at `rate` messages a second; returns how many the broker acknowledged (PUBACKs).

    MQTT 3.1.1 packets written straight to a socket, not through paho: paho's publish costs
    tens of µs of Python a message, so on these 2 cores the publishers took the CPU the
    ingester needed and set the rate themselves (1–7k messages/s); this one writes pre-built
    packets in 10 ms slices and counts the PUBACKs on a thread, as wrk does for HTTP."""
    sock = socket.create_connection(("127.0.0.1", port))
    client_id = f"live-{uuid.uuid4().hex}".encode()
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(_packet(0x10, connect))
    packets = []
    for n in range(per_device):
        ts = first_ms + n * INTERVAL_MS
        for d in device_ids:
            topic = f"et/{d}/readings".encode()
            mid = len(packets) % 65_535 + 1
            payload = orjson.dumps({"ts": ts, "power_w": 100.5 + n})
            body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + payload
            packets.append(_packet(0x32, body))
    acked = 0
    connected = threading.Event()

    def read_acks() -> None:
        nonlocal acked
        buf = b""
        while acked < len(packets):
            chunk = sock.recv(65_536)
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 2:  # every packet from the broker here has a 1-byte length
                kind, size = buf[0] >> 4, buf[1]
                if len(buf) < 2 + size:
                    break
                if kind == 4:  # PUBACK
                    acked += 1
                elif kind == 2:  # CONNACK
                    connected.set()
                buf = buf[2 + size :]

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    if not connected.wait(30):
        raise RuntimeError("the broker did not answer CONNECT")
    began = time.monotonic()
    per_slice = max(1, round(rate * 0.01))
    for i in range(0, len(packets), per_slice):
        # Never more than 60,000 unacknowledged: a packet id is reused after 65,535.
        while i - acked > 60_000:
            time.sleep(0.001)
        sock.sendall(b"".join(packets[i : i + per_slice]))
        wait = began + (i + per_slice) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    reader.join(timeout=120)
    sock.close()
    return acked


def publish_mqtt(
    port: int,
    devices: Sequence[Device],
    per_device: int,
    first_ms: int,
    processes: int,
    rate: float,
) -> int:
    ids = [d.id for d in devices]
    shares = [
        (port, ids[p::processes], per_device, first_ms, rate / processes) for p in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.starmap(_publish_share, shares))


def _publish_probe(
    port: int, device_id: str, first_ms: int, until: threading.Event
) -> list[tuple[int, float]]:
    """The MQTT probe: one QoS 1 message into a quarter of its own every PROBE_EVERY_S, each
    sent alone; [(quarter, when the broker acknowledged it)]."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    acked: list[tuple[int, float]] = []
    try:
        i = 0
        while not until.is_set():
            ts = first_ms + i * QUARTER_MS
            payload = orjson.dumps({"ts": ts, "power_w": 10.0})
            info = client.publish(f"et/{device_id}/readings", payload, qos=1)
            info.wait_for_publish(timeout=30)
            if info.is_published():
                acked.append((ts, time.time()))
            i += 1
            until.wait(PROBE_EVERY_S)
        return acked
    finally:
        client.loop_stop()
        client.disconnect()


async def counted(gateway: Gateway, owners: Sequence[dict[str, str]]) -> int:
    """Readings in the owners' usage buckets (the sum of their month buckets' samples)."""
    params = {"granularity": "month", "from": "0", "to": str(int(time.time() * 1000) + 1)}

    async def one(auth: dict[str, str]) -> int:
        r = await gateway.call("GET", "/usage", params=params, headers=auth)
        return sum(item["samples"] for item in r.json()["items"])

    return sum(await asyncio.gather(*(one(a) for a in owners)))


async def wait_counted(
    gateway: Gateway,
    owners: Sequence[dict[str, str]],
    want: int,
    timeout_s: float,
    every_s: float = 0.1,
) -> tuple[int, float]:
    """(count, when) once the count reaches `want`, or what it is when `timeout_s` runs out;
    asked every `every_s` (each time a /usage per owner, summing their 1,000 devices)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now, got = time.time(), await counted(gateway, owners)
        if got >= want or time.monotonic() > deadline:
            return got, now
        await asyncio.sleep(every_s)


async def probe(
    gateway: Gateway, device: Device, first_ms: int, until: asyncio.Event
) -> dict[tuple[str, int], float]:
    """One reading per quarter of its own every PROBE_EVERY_S; {(device, quarter): its 202}."""
    accepted: dict[tuple[str, int], float] = {}
    headers = {"X-Device-Key": device.key}
    i = 0
    while not until.is_set():
        ts = first_ms + i * QUARTER_MS
        await gateway.call("POST", "/readings", json={"ts": ts, "power_w": 10.0}, headers=headers)
        accepted[(device.id, ts)] = time.time()
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), PROBE_EVERY_S)
    return accepted


@dataclass(frozen=True)
class LiveSizes:
    devices: int
    http_seconds: float
    connections: int
    mqtt_per_device: int
    mqtt_processes: int
    idle_requests: int
    mqtt_rate: float = 20_000
    """Messages a second the MQTT publishers send, all together: the goal's rate. Devices send
    at their own pace, not as fast as a loop can; faster than the ingester drains, the broker's
    queue (and the delivery → bucket time) would only grow."""


async def run(
    base_url: str,
    mqtt_port: int | None,
    sizes: LiveSizes,
    watcher: Callable[[], Awaitable[Watcher]],
    say: Callable[[str], None],
    left: Callable[[float], float],
) -> dict[str, Any]:
    """The live workload on a running deployment; its figures."""
    now = int(time.time() * 1000)
    probe_first = now // QUARTER_MS * QUARTER_MS - 30 * 86_400_000  # a quarter each, a month ago
    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=16)) as c:
        gateway = Gateway(c, base_url)
        say(f"  live: enrolling {sizes.devices:,} devices")
        fleet = await asyncio.wait_for(
            enroll(gateway, sizes.devices, uuid.uuid4().hex[:8]), left(900)
        )
        idle = await asyncio.to_thread(
            idle_latency,
            base_url,
            fleet.owners[0],
            fleet.devices[0],
            fleet.devices[1 : sizes.idle_requests + 2],
            sizes.idle_requests,
        )
        say(
            "  idle: POST one reading p50 {post_one_reading[p50_ms]} ms (a device's first"
            " {post_new_device[p50_ms]} ms), GET one device p50 {get_device[p50_ms]} ms,"
            " /healthz p50 {healthz[p50_ms]} ms".format(**idle)
        )
        before = await counted(gateway, fleet.owners)
        watching = await asyncio.wait_for(watcher(), left(60))

        try:
            with tempfile.TemporaryDirectory() as tmp:
                keys = Path(tmp) / "keys.txt"
                keys.write_text("".join(d.key + "\n" for d in fleet.devices))
                say(f"  live HTTP: wrk, {sizes.connections} connections, {sizes.http_seconds:g} s")
                stop_probe = asyncio.Event()
                probing = asyncio.create_task(probe(gateway, fleet.probe, probe_first, stop_probe))
                began = time.time()
                try:
                    wrk = await asyncio.to_thread(
                        run_wrk,
                        base_url + "/api/v1/readings",
                        keys,
                        now - 3 * 3_600_000,
                        sizes.http_seconds,
                        sizes.connections,
                    )
                finally:
                    stop_probe.set()
                    accepted = await probing
            acked = wrk.requests - wrk.refused
            total, done = await wait_counted(gateway, fleet.owners, before + acked, left(120))
            http_counted = total - before
            await watching.wait_for(watching.usage, set(accepted), left(30))
            delays = [
                (watching.usage[k] - at) * 1000 for k, at in accepted.items() if k in watching.usage
            ]
        finally:
            await watching.stop()
        http = {
            "posts": wrk.requests,
            "refused": wrk.refused,
            "acknowledged": acked,
            "counted": http_counted,
            "not_counted_by_end": max(0, acked - http_counted),
            "accepted_per_s": round(wrk.requests / wrk.seconds),
            "readings_per_s": round(http_counted / (done - began)),
            "post_p50_ms_under_load": wrk.p50_ms,
            "post_p99_ms_under_load": wrk.p99_ms,
            "probe_readings": len(accepted),
            "probe_seen": len(delays),
            "p50_ms_202_to_bucket": _pct(delays, 50) if len(delays) > 1 else None,
            "p99_ms_202_to_bucket": _pct(delays, 99) if len(delays) > 1 else None,
        }
        say(
            f"  {http['readings_per_s']:,} readings/s end to end ({http['accepted_per_s']:,}"
            f" POSTs/s answered), p99 202 -> bucket {http['p99_ms_202_to_bucket']} ms,"
            f" not counted {http['not_counted_by_end']}"
        )
        result: dict[str, Any] = {"devices": sizes.devices, "idle": idle, "http": http}
        if mqtt_port is not None:
            result["mqtt"] = await mqtt_leg(
                gateway, fleet, mqtt_port, sizes, probe_first, watcher, say, left
            )
    return result


async def mqtt_leg(
    gateway: Gateway,
    fleet: Fleet,
    port: int,
    sizes: LiveSizes,
    probe_first: int,
    watcher: Callable[[], Awaitable[Watcher]],
    say: Callable[[str], None],
    left: Callable[[float], float],
) -> dict[str, Any]:
    """`mqtt_per_device` QoS 1 messages per device from `mqtt_processes` publishers, while the
    probe device publishes one reading into a quarter of its own (after the HTTP probe's)
    every PROBE_EVERY_S, timed from the broker's PUBACK to that bucket on `usage-events`."""
    before = await counted(gateway, fleet.owners)
    watching = await asyncio.wait_for(watcher(), left(60))
    messages = sizes.devices * sizes.mqtt_per_device
    first_quarter = probe_first + 10 * 86_400_000  # clear of the HTTP probe's quarters
    say(f"  live MQTT: {messages:,} QoS 1 messages from {sizes.mqtt_processes} processes")
    try:
        stop_probe = threading.Event()
        probing = asyncio.create_task(
            asyncio.to_thread(_publish_probe, port, fleet.probe.id, first_quarter, stop_probe)
        )
        began = time.time()
        try:
            published = await asyncio.to_thread(
                publish_mqtt,
                port,
                fleet.devices,
                sizes.mqtt_per_device,
                int(began * 1000) - 6 * 3_600_000,
                sizes.mqtt_processes,
                sizes.mqtt_rate,
            )
        finally:
            sent_s = time.time() - began
            stop_probe.set()
            probe_acked = await probing
        # Every 0.5 s: at every 0.1 s, the count's own /usage requests took ~70 % of the
        # embedded process's CPU in a profile of this leg, more than the ingester.
        got, done = await wait_counted(
            gateway, fleet.owners, before + published, left(180), COUNT_EVERY_S
        )
        accepted = {(fleet.probe.id, ts): at for ts, at in probe_acked}
        await watching.wait_for(watching.usage, set(accepted), left(30))
        delays = [
            (watching.usage[k] - at) * 1000 for k, at in accepted.items() if k in watching.usage
        ]
    finally:
        await watching.stop()
    out = {
        "messages": messages,
        "acknowledged_by_broker": published,
        "counted": got - before,
        "not_counted_by_end": max(0, published - (got - before)),
        "published_per_s": round(published / sent_s),
        "readings_per_s": round((got - before) / (done - began)),
        "probe_readings": len(accepted),
        "probe_seen": len(delays),
        "p50_ms_puback_to_bucket": _pct(delays, 50) if len(delays) > 1 else None,
        "p99_ms_puback_to_bucket": _pct(delays, 99) if len(delays) > 1 else None,
    }
    say(
        f"  {out['readings_per_s']:,} readings/s end to end ({out['published_per_s']:,} msg/s"
        f" published), p99 PUBACK -> bucket {out['p99_ms_puback_to_bucket']} ms,"
        f" not counted {out['not_counted_by_end']}"
    )
    return out
