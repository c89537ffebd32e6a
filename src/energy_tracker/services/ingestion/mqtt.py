"""Readings in over MQTT (ET_MQTT_URL): `et/+/readings` and Tasmota's `tele/+/SENSOR`.

Messages are taken in small batches (whatever has arrived, up to MAX_BATCH_MESSAGES), parsed by
`payloads`, checked by the same `ReadingRecorder` rules as HTTP, and published in one bus call;
a message that cannot be read or breaks a rule goes to `energy-readings.dlq` whole, with the
reason, its topic and its original bytes. A lost broker is reconnected with a growing pause.

Delivery: the MQTT client acknowledges a QoS 1 message when it receives it, and the session is
clean, so what devices publish while this process is down, or what it holds when killed, is not
redelivered; readings are held in memory and retried while the bus refuses them. Whoever can
publish to the broker can send readings for any device: the broker's ACLs are the boundary.
Several ingestion processes split the messages between them with `?shared=<group>` on the URL
(an MQTT shared subscription); without it every process takes every message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiomqtt

from energy_tracker.core.bus.runner import dead_letter_record, dlq_topic
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.errors import BackendUnavailable
from energy_tracker.core.events import ENERGY_READINGS, Reading
from energy_tracker.core.urls import BrokerSettings
from energy_tracker.services.ingestion.api import MAX_BODY_BYTES
from energy_tracker.services.ingestion.payloads import (
    TASMOTA_META_KEY,
    PayloadError,
    parse_et,
    parse_tasmota,
    route,
)
from energy_tracker.services.ingestion.recorder import ReadingRecorder

log = logging.getLogger(__name__)

TOPICS = ("et/+/readings", "tele/+/SENSOR")
MAX_BATCH_MESSAGES = 1000
NAME_TTL_S = 30.0
"""How long a Tasmota name's device (or its absence) is remembered: a re-mapped name takes
effect within this, and a chatty unmapped device costs one query per period, not per message."""
MAX_CACHED_NAMES = 10_000
MAX_KEPT_BYTES = 64 * 1024
RETRY_PAUSE_S = (0.5, 30.0)
"""First and longest pause between attempts, for both the broker and the bus."""


@dataclass(frozen=True, slots=True)
class Received:
    """One MQTT message as it arrived."""

    topic: str
    payload: bytes
    received_ms: int


def topic_filters(broker: BrokerSettings) -> list[str]:
    """The subscriptions: shared among the group's members when ET_MQTT_URL names one."""
    prefix = f"$share/{broker.shared_group}/" if broker.shared_group else ""
    return [prefix + t for t in TOPICS]


async def probe(url: str) -> None:
    """Connect once, so that a broker that cannot be reached stops the start in one line."""
    broker = BrokerSettings.from_url(url)
    try:
        async with broker.client():
            pass
    except (aiomqtt.MqttError, OSError) as exc:
        raise BackendUnavailable("ET_MQTT_URL", url, str(exc) or type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class _Target:
    device_id: str | None
    timezone: ZoneInfo | None
    error: str | None
    expires: float


class MqttIngester:
    """Subscribes, turns messages into readings or dead letters, and reconnects when cut off."""

    def __init__(self, url: str, recorder: ReadingRecorder, directory: DeviceDirectory) -> None:
        self.url = url
        self.broker = BrokerSettings.from_url(url)
        self.recorder = recorder
        self.directory = directory
        self._names: dict[str, _Target] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Receive until stopped, reconnecting after every loss of the broker."""
        pause = RETRY_PAUSE_S[0]
        while not self._stopping.is_set():
            try:
                async with self.broker.client() as client:
                    for topic_filter in topic_filters(self.broker):
                        await client.subscribe(topic_filter, qos=1)
                    log.info("MQTT: subscribed to %s", ", ".join(topic_filters(self.broker)))
                    pause = RETRY_PAUSE_S[0]
                    await self._receive(client)
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    break
                log.warning("MQTT broker lost (%s); reconnecting in %.1f s", exc, pause)
                await self._pause(pause)
                pause = min(pause * 2, RETRY_PAUSE_S[1])

    def stop(self) -> None:
        self._stopping.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                first = asyncio.ensure_future(anext(messages))
                await asyncio.wait({first, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not first.done():
                    first.cancel()
                    return
                batch = [_received(first.result())]
                while len(batch) < MAX_BATCH_MESSAGES and len(messages) > 0:
                    batch.append(_received(await anext(messages)))
                await self.handle(batch)
        finally:
            stopping.cancel()

    async def handle(self, batch: Sequence[Received]) -> None:
        """Publish the readings of the good messages and dead-letter the others, each with why."""
        parsed: dict[int, list[Reading]] = {}
        reasons: dict[int, str] = {}
        for index, message in enumerate(batch):
            try:
                parsed[index] = await self._parse(message)
            except PayloadError as exc:
                reasons[index] = str(exc)
        candidates = [(i, r) for i, readings in parsed.items() for r in readings]
        for p in await self.recorder.check(candidates):
            reasons.setdefault(p["index"], f"{p['field']}: {p['message']}")
        good = [r for i, readings in parsed.items() if i not in reasons for r in readings]
        if good:
            await self._until_accepted(lambda: self.recorder.publish(good), len(good))
        if reasons:
            letters = [_dead_letter(batch[i], reason) for i, reason in sorted(reasons.items())]
            await self._until_accepted(
                lambda: self.recorder.bus.publish(dlq_topic(ENERGY_READINGS), letters),
                len(letters),
            )
            log.warning("MQTT: %d message(s) sent to the DLQ", len(letters))

    async def _parse(self, message: Received) -> list[Reading]:
        if len(message.payload) > MAX_BODY_BYTES:
            raise PayloadError(f"payload over {MAX_BODY_BYTES} bytes")
        routed = route(message.topic)
        if routed is None:
            raise PayloadError(f"no reading is expected on topic {message.topic}")
        kind, ref = routed
        if kind == "et":
            return parse_et(ref, message.payload, message.received_ms)
        target = await self._tasmota_target(ref)
        if target.error is not None or target.device_id is None or target.timezone is None:
            raise PayloadError(target.error or f"Tasmota topic {ref!r} has no device")
        return [
            parse_tasmota(target.device_id, message.payload, target.timezone, message.received_ms)
        ]

    async def _tasmota_target(self, name: str) -> _Target:
        now = time.monotonic()
        cached = self._names.get(name)
        if cached is not None and cached.expires > now:
            return cached
        if len(self._names) >= MAX_CACHED_NAMES:
            self._names = {n: t for n, t in self._names.items() if t.expires > now}
            if len(self._names) >= MAX_CACHED_NAMES:
                self._names.clear()
        ids = await self.directory.ids_by_meta(TASMOTA_META_KEY, name)
        expires = now + NAME_TTL_S
        if len(ids) != 1:
            found = "no device has" if not ids else f"{len(ids)} devices have"
            error = f"unknown device: {found} metadata {TASMOTA_META_KEY}={name!r}"
            target = _Target(None, None, error, expires)
        else:
            ctx = (await self.directory.contexts(ids)).get(ids[0])
            target = (
                _Target(ids[0], ZoneInfo(ctx.timezone), None, expires)
                if ctx is not None
                else _Target(None, None, f"unknown device for Tasmota topic {name!r}", expires)
            )
        self._names[name] = target
        return target

    async def _until_accepted(self, publish: Callable[[], Awaitable[object]], count: int) -> None:
        """Retry a bus publish until it is accepted: the messages were acknowledged to the broker
        already, so giving up would lose them. Only a stop ends the wait, and says what is lost."""
        pause = RETRY_PAUSE_S[0]
        while True:
            try:
                await publish()
                return
            except Exception as exc:  # whatever the adapter raises: PublishFailed, its own
                if self._stopping.is_set():
                    log.error("MQTT: %d record(s) lost at shutdown: the bus refused them", count)
                    return
                log.warning("MQTT: the bus refused %d record(s) (%s); retrying", count, exc)
                await self._pause(pause)
                pause = min(pause * 2, RETRY_PAUSE_S[1])

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass


def _received(message: aiomqtt.Message) -> Received:
    payload = message.payload
    if not isinstance(payload, bytes | bytearray):
        payload = str(payload).encode() if payload is not None else b""
    return Received(message.topic.value, bytes(payload), int(time.time() * 1000))


def _dead_letter(message: Received, reason: str) -> tuple[bytes, bytes]:
    routed = route(message.topic)
    key = (routed[1] if routed else message.topic).encode()
    received = datetime.fromtimestamp(message.received_ms / 1000, UTC).isoformat()
    source = {"mqtt_topic": message.topic, "received_at": received}
    payload = message.payload
    if len(payload) > MAX_KEPT_BYTES:
        # A DLQ record must still fit a bus message; the head is enough to see what it was.
        payload = payload[:MAX_KEPT_BYTES]
        reason += f" (original bytes truncated to the first {MAX_KEPT_BYTES})"
    return dead_letter_record(key, payload, reason, source)
