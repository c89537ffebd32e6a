"""Readings in over MQTT (ET_MQTT_URL): `et/+/readings` and Tasmota's `tele/+/SENSOR`.

Messages are taken in small batches (whatever has arrived, up to MAX_BATCH_MESSAGES), parsed by
`payloads`, checked by the same `ReadingRecorder` rules as HTTP, and published in one bus call;
a message that cannot be read or breaks a rule goes to `energy-readings.dlq` whole, with the
reason, its topic and its original bytes. A lost broker is reconnected with a growing pause, and
so is the broker after a store the batch needed was away (the batch is not acknowledged).

Delivery, so that no message the broker took is lost on this side:
- A persistent session (MQTT 5, clean start off, `?session_expiry=` seconds, one day by default)
  under a stable client id: `?client_id=` on the URL, else one derived from the host and the data
  directory, so a restarted process resumes its session and the broker keeps what arrives while
  it is down (up to the broker's own `max_queued_messages`). Two processes must not share an id:
  replicas on one host with one data directory each need their own `client_id`.
- A large in-flight window (Receive Maximum 65,535): the broker sends a burst straight on instead
  of queueing it behind 20 unacknowledged messages, where its queue limit would drop the rest.
- A QoS 1 message is acknowledged only after the bus has durably accepted its readings (or its
  dead letter); a process killed before that gets it again from the broker.
- What the broker reports it dropped (`$SYS/broker/publish/messages/dropped`, Mosquitto) is in
  /metrics as `et_mqtt_broker_dropped_messages`, so a loss on the broker's side is seen.
Readings are retried while the bus refuses them. Whoever can publish to the broker can send
readings for any device: the broker's ACLs are the boundary. Several ingestion processes split
the messages between them with `?shared=<group>` on the URL (an MQTT shared subscription);
without it every process takes every message.
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
from prometheus_client import Gauge

from energy_tracker.core.bus.runner import dead_letter_record, dlq_topic
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.errors import BackendUnavailable
from energy_tracker.core.events import ENERGY_READINGS, Reading
from energy_tracker.core.failures import is_transient
from energy_tracker.core.loops import Backoff, Stopper
from energy_tracker.core.urls import BrokerSettings
from energy_tracker.services.ingestion.api import MAX_BODY_BYTES
from energy_tracker.services.ingestion.payloads import (
    TASMOTA_META_KEY,
    PayloadError,
    parse_et,
    parse_tasmota,
    route,
)
from energy_tracker.services.ingestion.recorder import (
    READINGS_ACCEPTED,
    READINGS_REFUSED,
    ReadingRecorder,
)

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
BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"

DROPPED = Gauge(
    "et_mqtt_broker_dropped_messages",
    "Messages the MQTT broker reports it dropped (queue or in-flight limits), since it started",
)


@dataclass(frozen=True, slots=True)
class Received:
    """One MQTT message as it arrived."""

    topic: str
    payload: bytes
    received_ms: int
    mid: int = 0
    qos: int = 0


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

    def __init__(
        self, url: str, recorder: ReadingRecorder, directory: DeviceDirectory, place: str = ""
    ) -> None:
        self.url = url
        self.broker = BrokerSettings.from_url(url)
        self.session = self.broker.session_id(place)
        self.recorder = recorder
        self.directory = directory
        self._names: dict[str, _Target] = {}
        self._stopper = Stopper()
        # Subscribed to the broker now (/readyz): false between a loss and the reconnection.
        self.ready = False

    async def run(self) -> None:
        """Receive until stopped, reconnecting after every loss of the broker."""
        backoff = Backoff(*RETRY_PAUSE_S)
        while not self._stopper.stopped:
            try:
                async with self.broker.client(self.session) as client:
                    for topic_filter in topic_filters(self.broker):
                        await client.subscribe(topic_filter, qos=1)
                    # Mosquitto publishes it when it changes; other brokers may not have it.
                    await client.subscribe(BROKER_DROPPED, qos=0)
                    log.info("MQTT: subscribed to %s", ", ".join(topic_filters(self.broker)))
                    backoff.reset()
                    self.ready = True
                    await self._receive(client)
            except aiomqtt.MqttError as exc:
                self.ready = False
                if self._stopper.stopped:
                    break
                pause = backoff.next()
                log.warning("MQTT broker lost (%s); reconnecting in %.1f s", exc, pause)
                await self._stopper.sleep(pause)
            except Exception as exc:
                # A store away (the device look-up's database): the batch in hand was not
                # acknowledged, so the broker hands it over again once this reconnects. Only
                # a permanent error (a bug) ends the ingester, which /readyz then names.
                self.ready = False
                if not is_transient(exc):
                    raise
                pause = backoff.next()
                log.warning(
                    "MQTT: a store is away (%s); the batch stays unacknowledged, receiving"
                    " again in %.1f s",
                    exc,
                    pause,
                )
                await self._stopper.sleep(pause)

    def stop(self) -> None:
        """End `run`: the batch in hand is still published (or said to be lost)."""
        self._stopper.stop()

    async def _receive(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        stopping = asyncio.ensure_future(self._stopper.wait())
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
                readings = [m for m in batch if not _broker_report(m)]
                if readings and not await self.handle(readings):
                    return
                # Only now does the broker hear that they are ours: the bus has them.
                for m in readings:
                    if m.qos:
                        client._client.ack(m.mid, m.qos)
        finally:
            stopping.cancel()

    async def handle(self, batch: Sequence[Received]) -> bool:
        """Publish the readings of the good messages and dead-letter the others, each with why;
        False when a stop came while the bus still refused them (they must not be acknowledged)."""
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
        if good and not await self._until_accepted(lambda: self.recorder.publish(good), len(good)):
            return False
        if good:
            READINGS_ACCEPTED.labels("mqtt").inc(len(good))
        for index in reasons:
            # A message dead-lettered whole counts once: what it held may not be readings at all.
            READINGS_REFUSED.labels("mqtt", "schema" if index not in parsed else "invalid").inc()
        if reasons:
            letters = [_dead_letter(batch[i], reason) for i, reason in sorted(reasons.items())]
            if not await self._until_accepted(
                lambda: self.recorder.bus.publish(dlq_topic(ENERGY_READINGS), letters),
                len(letters),
            ):
                return False
            log.warning("MQTT: %d message(s) sent to the DLQ", len(letters))
        return True

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

    async def _until_accepted(self, publish: Callable[[], Awaitable[object]], count: int) -> bool:
        """Retry a bus publish until it is accepted (True). Only a stop ends the wait (False):
        the messages are then left unacknowledged, for the broker to deliver again."""
        backoff = Backoff(*RETRY_PAUSE_S)
        while True:
            try:
                await publish()
                return True
            except Exception as exc:  # whatever the adapter raises: PublishFailed, its own
                if self._stopper.stopped:
                    log.error(
                        "MQTT: stopping while the bus refuses %d record(s): left unacknowledged,"
                        " the broker delivers them again",
                        count,
                    )
                    return False
                log.warning("MQTT: the bus refused %d record(s) (%s); retrying", count, exc)
                await self._stopper.sleep(backoff.next())


def _received(message: aiomqtt.Message) -> Received:
    payload = message.payload
    if not isinstance(payload, bytes | bytearray):
        payload = str(payload).encode() if payload is not None else b""
    return Received(
        message.topic.value, bytes(payload), int(time.time() * 1000), message.mid, message.qos
    )


def _broker_report(message: Received) -> bool:
    """True for the broker's own report of dropped messages, which goes to /metrics."""
    if message.topic != BROKER_DROPPED:
        return False
    try:
        DROPPED.set(int(message.payload))
    except ValueError:
        log.warning("MQTT: unreadable %s: %r", BROKER_DROPPED, message.payload[:40])
    return True


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
