"""Drives simulated homes against a running gateway: accounts and devices through the API, then
their readings, as a backfill (history sent as fast as allowed) and/or live (one batch per home
every interval), over HTTP or MQTT.

Accounts are derived from the seed (`sim-<seed>-<index>@example.com`), so running again with
the same seed reuses the homes and devices made before instead of adding new ones. Every home
posts its own devices' readings with its owner's token, one POST per home and batch, in time
order: what a home energy gateway uploading its devices' data does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from energy_tracker.simulator.homes import Home, HomeStream, Sample, make_homes

API_PREFIX = "/api/v1"
PASSWORD = "simulated home, not a secret"
MAX_ATTEMPTS = 8
"""Attempts per request while the gateway answers 429 or 503 (it says when to come back)."""


class SimulatorError(Exception):
    """The gateway refused something the simulator cannot work around; the message says what."""


@dataclass
class HomeAccount:
    """A home as registered: its owner's token and the id of each of its devices."""

    home: Home
    email: str
    token: str
    device_ids: dict[str, str]  # device key in the home -> device id

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def email_of(home: Home) -> str:
    return f"sim-{home.seed}-{home.index}@example.com"


class Gateway:
    """The few API calls the simulator makes; 429 and 503 are waited out, anything else that
    is not a success raises SimulatorError naming the call."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.client = client
        self.api = base_url.rstrip("/") + API_PREFIX

    async def call(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 202),
        params: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if content is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        for _ in range(MAX_ATTEMPTS):
            r = await self.client.request(
                method, self.api + path, params=params, json=json, content=content, headers=headers
            )
            if r.status_code in ok:
                return r
            if r.status_code not in (429, 503):
                raise SimulatorError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 30.0))
        raise SimulatorError(f"{method} {path}: still {r.status_code} after {MAX_ATTEMPTS} tries")

    async def register(self, home: Home, password: str = PASSWORD) -> HomeAccount:
        """The home's account (created, or reused from an earlier run) and its devices."""
        email = email_of(home)
        creds = {"email": email, "password": password}
        await self.call("POST", "/auth/register", ok=(201, 409), json=creds)
        token = await self.login(email, password)
        auth = {"Authorization": f"Bearer {token}"}
        name = f"Simulated home {home.index}"
        await self.call("PATCH", "/users/me", json={"name": name}, headers=auth)
        own = (await self.call("GET", "/households", headers=auth)).json()["items"][0]["id"]
        settings = {
            "name": name,
            "timezone": home.place.timezone,
            "currency": home.place.currency,
            "tariff": home.place.tariff,
        }
        await self.call("PATCH", f"/households/{own}", json=settings, headers=auth)
        listed = (
            await self.call("GET", f"/devices?limit=100&household_id={own}", headers=auth)
        ).json()
        ids = {d["name"]: d["id"] for d in listed}
        placed = {d["id"]: (d.get("role"), d.get("parent_id")) for d in listed}
        keys: dict[str, str] = {}
        # Parents first (the specs list the meter before what sits behind it): a sub-meter is
        # created, or placed again on a later run, inside the meter's id.
        for spec in home.devices:
            parent = keys.get(spec.parent) if spec.parent else None
            place = {"role": spec.role, "parent_id": parent}
            if spec.name not in ids:
                body = {"name": spec.name, "type": spec.type, **place}
                created = await self.call("POST", "/devices", json=body, headers=auth)
                ids[spec.name] = created.json()["id"]
            elif placed[ids[spec.name]] != (spec.role, parent):
                path = f"/devices/{ids[spec.name]}"
                await self.call("PATCH", path, json=place, headers=auth)
            keys[spec.key] = ids[spec.name]
        return HomeAccount(home, email, token, keys)

    async def login(self, email: str, password: str = PASSWORD) -> str:
        """A fresh access token."""
        creds = {"email": email, "password": password}
        return (await self.call("POST", "/auth/login", json=creds)).json()["access_token"]

    async def post_readings(self, account: HomeAccount, body: bytes) -> int:
        """POST a body made by `readings_body`; how many readings the gateway accepted. An
        expired token (a live run outlasts it) is renewed and the POST sent again."""
        ok = (202, 401)
        r = await self.call("POST", "/readings", ok=ok, content=body, headers=account.auth)
        if r.status_code == 401:
            account.token = await self.login(account.email)
            r = await self.call("POST", "/readings", content=body, headers=account.auth)
        return int(r.json()["accepted"])


async def register_homes(
    gateway: Gateway,
    homes: Sequence[Home],
    *,
    concurrency: int = 4,
    on_done: Callable[[HomeAccount], None] = lambda _: None,
) -> list[HomeAccount]:
    """Register every home, a few at a time (password hashing makes each take a while)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(home: Home) -> HomeAccount:
        async with gate:
            account = await gateway.register(home)
        on_done(account)
        return account

    return list(await asyncio.gather(*(one(h) for h in homes)))


def readings_body(account: HomeAccount, samples: Sequence[Sample]) -> bytes:
    """`{"readings": [...]}` for POST /readings, in the shape devices send."""
    ids = account.device_ids
    return orjson.dumps(
        {
            "readings": [
                {
                    "device_id": ids[s.device],
                    "ts": s.ts,
                    "power_w": s.power_w,
                    "energy_wh": s.energy_wh,
                    "voltage_v": s.voltage_v,
                }
                for s in samples
            ]
        }
    )


class RateLimit:
    """At most `per_s` readings a second over all senders (None: no limit)."""

    def __init__(self, per_s: float | None) -> None:
        self.per_s = per_s
        self._next = time.monotonic()

    async def take(self, readings: int) -> None:
        if not self.per_s:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + readings / self.per_s
        if start > now:
            await asyncio.sleep(start - now)


Send = Callable[[HomeAccount, list[Sample]], Awaitable[None]]


def http_sender(gateway: Gateway) -> Send:
    async def send(account: HomeAccount, samples: list[Sample]) -> None:
        await gateway.post_readings(account, readings_body(account, samples))

    return send


@contextlib.asynccontextmanager
async def mqtt_sender(url: str) -> AsyncIterator[Send]:
    """Publish each device's readings to `et/<device_id>/readings` (QoS 1), in the JSON shape
    the ingestion service reads there."""
    from energy_tracker.core.urls import BrokerSettings

    async with BrokerSettings.from_url(url).client() as client:

        async def send(account: HomeAccount, samples: list[Sample]) -> None:
            by_device: dict[str, list[dict[str, Any]]] = {}
            for s in samples:
                reading = {
                    "ts": s.ts,
                    "power_w": s.power_w,
                    "energy_wh": s.energy_wh,
                    "voltage_v": s.voltage_v,
                }
                by_device.setdefault(account.device_ids[s.device], []).append(reading)
            for device_id, readings in by_device.items():
                payload = orjson.dumps({"readings": readings})
                await client.publish(f"et/{device_id}/readings", payload, qos=1)

        yield send


@dataclass(frozen=True)
class Plan:
    """What `energy-tracker simulate` was asked to do."""

    homes: int
    seed: int
    interval_ms: int
    backfill_days: float | None  # None: live only
    duration_s: float | None  # live for this long; None: until interrupted
    rate: float | None  # readings a second at most
    batch: int  # readings a backfill POST at most
    concurrency: int


class Progress(Protocol):
    """What the simulation reports as it goes; the CLI draws it."""

    def homes_registered(self, done: int, total: int) -> None: ...

    def accounts_ready(self, accounts: Sequence[HomeAccount]) -> None:
        """The accounts made, so a person can sign in to the dashboard as one of them."""

    def backfill_started(self, total: int) -> None: ...

    def sent(self, readings: int) -> None: ...

    def live_started(self) -> None: ...


async def backfill(
    accounts: Sequence[HomeAccount],
    streams: dict[int, HomeStream],
    until_ms: int,
    send: Send,
    *,
    batch: int,
    concurrency: int,
    limit: RateLimit,
    progress: Progress,
) -> None:
    """Send every stream's readings up to `until_ms`, each home's in order, `concurrency` homes
    at a time, `batch` readings a request at most."""
    queue: asyncio.Queue[HomeAccount] = asyncio.Queue()
    for account in accounts:
        queue.put_nowait(account)

    async def worker() -> None:
        while not queue.empty():
            account = queue.get_nowait()
            stream = streams[account.home.index]
            per_instant = len(account.home.devices)
            while stream.next_ms < until_ms:
                left = -(-(until_ms - stream.next_ms) // stream.interval_ms)
                samples = stream.take(min(left, max(1, batch // per_instant)))
                await limit.take(len(samples))
                await send(account, samples)
                progress.sent(len(samples))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def live(
    accounts: Sequence[HomeAccount],
    streams: dict[int, HomeStream],
    send: Send,
    *,
    interval_ms: int,
    concurrency: int,
    limit: RateLimit,
    progress: Progress,
    stop_at: float | None,
) -> None:
    """Every interval, each home sends what its devices read since the last time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(account: HomeAccount, until_ms: int) -> None:
        stream = streams[account.home.index]
        count = -(-(until_ms - stream.next_ms) // stream.interval_ms)
        if count <= 0:
            return
        async with gate:
            samples = stream.take(count)
            await limit.take(len(samples))
            await send(account, samples)
        progress.sent(len(samples))

    while stop_at is None or time.monotonic() < stop_at:
        now_ms = int(time.time() * 1000)
        await asyncio.gather(*(one(a, now_ms + 1) for a in accounts))
        wait_s = interval_ms / 1000 - (time.time() * 1000 - now_ms) / 1000
        if stop_at is not None:
            wait_s = min(wait_s, stop_at - time.monotonic())
        if wait_s > 0:
            await asyncio.sleep(wait_s)


async def simulate(
    plan: Plan, base_url: str, progress: Progress, mqtt_url: str | None = None
) -> None:
    """Register the plan's homes, then backfill and/or run them live."""
    homes = make_homes(plan.seed, plan.homes)
    limits = httpx.Limits(max_connections=plan.concurrency + 2)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        gateway = Gateway(client, base_url)
        done = 0

        def registered(_: HomeAccount) -> None:
            nonlocal done
            done += 1
            progress.homes_registered(done, len(homes))

        progress.homes_registered(0, len(homes))
        accounts = await register_homes(gateway, homes, on_done=registered)
        progress.accounts_ready(accounts)
        now_ms = int(time.time() * 1000)
        # Every home reads at the same instants, on the interval's grid.
        if plan.backfill_days:
            start = now_ms - int(plan.backfill_days * 86_400_000)
        else:
            start = now_ms
        start -= start % plan.interval_ms
        streams = {h.index: h.stream(start, plan.interval_ms) for h in homes}
        limit = RateLimit(plan.rate)
        async with contextlib.AsyncExitStack() as stack:
            send = (
                await stack.enter_async_context(mqtt_sender(mqtt_url))
                if mqtt_url
                else http_sender(gateway)
            )
            if plan.backfill_days:
                instants = -(-(now_ms - start) // plan.interval_ms)
                progress.backfill_started(instants * sum(len(h.devices) for h in homes))
                await backfill(
                    accounts,
                    streams,
                    now_ms,
                    send,
                    batch=plan.batch,
                    concurrency=plan.concurrency,
                    limit=limit,
                    progress=progress,
                )
            if plan.duration_s == 0:
                return
            progress.live_started()
            stop_at = None if plan.duration_s is None else time.monotonic() + plan.duration_s
            await live(
                accounts,
                streams,
                send,
                interval_ms=plan.interval_ms,
                concurrency=plan.concurrency,
                limit=limit,
                progress=progress,
                stop_at=stop_at,
            )
