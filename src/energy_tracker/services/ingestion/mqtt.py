"""Readings in over MQTT (ET_MQTT_URL): `et/+/readings` and Tasmota's `tele/+/SENSOR`.

Messages are taken in batches (whatever has arrived while the previous batch was being
published, up to MAX_BATCH_MESSAGES), parsed by `payloads`, checked by the same
`ReadingRecorder` rules as HTTP, and published in one bus call; a message that cannot be read or
breaks a rule goes to `energy-readings.dlq` whole, with the reason, its topic and its original
bytes. A lost broker is reconnected with a growing pause, and so is the broker after a store the
batch needed was away (the batch is not acknowledged).

Messages are received with gmqtt, not aiomqtt/paho: paho reads a socket one packet at a time
(three `recv` calls and an event-loop turn per message, and MQTT 5 properties parsed into
objects), which cost ~117 µs of CPU per message here against ~24 µs for gmqtt, which parses
whatever the socket delivered in one pass (scratch measurement of 30,000 QoS 1 messages with
manual acknowledgement, README "The live workload"). aiomqtt still publishes (the simulator)
and checks the broker at start.

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
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiomqtt
import gmqtt
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError
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
    mistimed_by,
)

log = logging.getLogger(__name__)
# gmqtt's warnings repeat what the ingester logs (a lost connection), or are expected: a
# PUBACK written after the connection was closed on purpose, so that the broker sends it again.
logging.getLogger("gmqtt").setLevel(logging.ERROR)

TOPICS = ("et/+/readings", "tele/+/SENSOR")
MAX_BATCH_MESSAGES = 5000
"""The most messages one bus write carries; a burst larger than this goes in several."""
RECEIVE_MAXIMUM = 65_535
"""The most unacknowledged messages the broker may send the ingester (MQTT 5's limit)."""
NAME_TTL_S = 30.0
"""How long a Tasmota name's device (or its absence) is remembered: a re-mapped name takes
effect within this, and a chatty unmapped device costs one query per period, not per message."""
MAX_CACHED_NAMES = 10_000
MAX_CACHED_DEVICES = 200_000
CHECK_EVERY_S = 1.0
"""How often, at most, the credential change counter is read: how late a device disabled (in
this process or another) is refused here."""
UNKNOWN_DEVICE = "unknown device"  # ReadingRecorder.refusals' reason for a device not found
MAX_KEPT_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
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
        self,
        url: str,
        recorder: ReadingRecorder,
        directory: DeviceDirectory,
        place: str = "",
        changes: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`changes` reads the credential change counter (`CredentialChanges.version`); without
        it every batch asks the directory about its devices."""
        self.url = url
        self.broker = BrokerSettings.from_url(url)
        self.session = self.broker.session_id(place)
        self.recorder = recorder
        self.directory = directory
        self._names: dict[str, _Target] = {}
        self._changes = changes
        # Why each known device may not send (None: it may), as of the counter's `_version`.
        self._devices: dict[str, str | None] = {}
        self._version: int | None = None
        self._next_check = 0.0
        self._stopper = Stopper()
        # Messages received and not yet published, each with its PUBACK's future (None: QoS 0);
        # `_in_hand` is the batch being published.
        self._arrived: list[tuple[Received, asyncio.Future[int] | None]] = []
        self._in_hand: list[tuple[Received, asyncio.Future[int] | None]] = []
        self._wake = asyncio.Event()
        # Subscribed to the broker now (/readyz): false between a loss and the reconnection.
        self.ready = False
        # Messages taken (published, or dead-lettered) since the start: how replicas sharing
        # a subscription split the load.
        self.taken = 0

    async def run(self) -> None:
        """Receive until stopped, reconnecting after every loss of the broker."""
        backoff = Backoff(*RETRY_PAUSE_S)
        while not self._stopper.stopped:
            client = _Client(self.session, self.broker.session_expiry_s, self._on_message)
            try:
                await self._connect(client)
                backoff.reset()
                self.ready = True
                await self._receive(client)
            except (OSError, MQTTConnectError, _BrokerLost) as exc:
                self.ready = False
                if self._stopper.stopped:
                    break
                pause = backoff.next()
                log.warning(
                    "MQTT broker lost (%s); reconnecting in %.1f s",
                    str(exc) or type(exc).__name__,
                    pause,
                )
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
            finally:
                await self._let_go(client)

    def stop(self) -> None:
        """End `run`: the batch in hand is still published (or said to be lost)."""
        self._stopper.stop()

    async def _connect(self, client: _Client) -> None:
        if self.broker.username:
            client.set_auth_credentials(self.broker.username, self.broker.password)
        tls = ssl.create_default_context() if self.broker.tls else False
        await asyncio.wait_for(
            client.connect(
                self.broker.host, self.broker.port, ssl=tls, keepalive=30, version=MQTTv50
            ),
            CONNECT_TIMEOUT_S,
        )
        filters = topic_filters(self.broker)
        # Mosquitto publishes its drop count when it changes; other brokers may not have it.
        client.subscribe(
            [gmqtt.Subscription(f, qos=1) for f in filters]
            + [gmqtt.Subscription(BROKER_DROPPED, qos=0)]
        )
        await asyncio.wait_for(asyncio.shield(client.subscribed), CONNECT_TIMEOUT_S)
        log.info("MQTT: subscribed to %s", ", ".join(filters))

    async def _on_message(self, topic: str, payload: bytes, qos: int) -> int:
        """gmqtt's callback for each message: the PUBACK goes out when this returns, so it
        returns once the bus has the message's readings (or its dead letter)."""
        if topic == BROKER_DROPPED:
            _broker_report(payload)
            return 0
        received = Received(topic, payload, int(time.time() * 1000))
        if qos == 0:
            self._arrived.append((received, None))
            self._wake.set()
            return 0
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._arrived.append((received, done))
        self._wake.set()
        return await done

    async def _receive(self, client: _Client) -> None:
        """Publish what arrived, batch after batch, acknowledging each batch once the bus has
        it; returns on a stop (or a batch that could not be published), raises on a loss."""
        stopping = asyncio.ensure_future(self._stopper.wait())
        lost = asyncio.ensure_future(client.lost.wait())
        try:
            while True:
                if not self._arrived:
                    self._wake.clear()
                    waking = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait(
                        {waking, stopping, lost}, return_when=asyncio.FIRST_COMPLETED
                    )
                    waking.cancel()
                if lost.done():
                    raise _BrokerLost("connection closed")
                if stopping.done():
                    return
                batch = self._arrived[:MAX_BATCH_MESSAGES]
                del self._arrived[:MAX_BATCH_MESSAGES]
                self._in_hand = batch
                if not await self.handle([m for m, _ in batch]):
                    return
                self.taken += len(batch)
                # Only now does the broker hear that they are ours: the bus has them.
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_result(0)
                self._in_hand = []
        finally:
            stopping.cancel()
            lost.cancel()

    async def _let_go(self, client: _Client) -> None:
        """Close the connection, then end the callbacks of what was not acknowledged: with the
        connection closed first, none of them can send a PUBACK, and the broker delivers them
        again to the next connection."""
        client.lost.set()
        with contextlib.suppress(Exception):
            await client.disconnect()
        for _, done in [*self._in_hand, *self._arrived]:
            if done is not None and not done.done():
                done.set_result(0)
        self._in_hand, self._arrived = [], []

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
        oldest, newest = self.recorder.window()
        for index, reading in candidates:
            if (mistime := mistimed_by(reading.ts, oldest, newest)) is not None:
                reasons.setdefault(index, f"ts: {mistime}")
        refused = await self._refusals({r.device_id for _, r in candidates})
        for index, reading in candidates:
            if (why := refused.get(reading.device_id)) is not None:
                reasons.setdefault(index, f"device_id: {why}")
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

    async def _refusals(self, device_ids: set[str]) -> dict[str, str]:
        """`ReadingRecorder.refusals` for these devices, from memory for the devices already
        seen: a query per batch for 10,000 devices was half the ingester's own time. Known
        devices are kept until the credential change counter moves (a device disabled, enabled
        or deleted, an owner disabled: what `DeviceContext.enabled` depends on), read at most
        every CHECK_EVERY_S; an unknown device is asked about again each time, as creating one
        does not move the counter."""
        if self._changes is None:
            return await self.recorder.refusals(device_ids, None)
        now = time.monotonic()
        if now >= self._next_check:
            version = await self._changes()
            if version != self._version:
                self._devices.clear()
                self._version = version
            self._next_check = now + CHECK_EVERY_S
        missing = [d for d in device_ids if d not in self._devices]
        found = await self.recorder.refusals(missing, None) if missing else {}
        if len(self._devices) + len(missing) > MAX_CACHED_DEVICES:
            self._devices.clear()
        for device_id in missing:
            why = found.get(device_id)
            if why != UNKNOWN_DEVICE:
                self._devices[device_id] = why
        refused = {d: why for d in device_ids if (why := self._devices.get(d)) is not None}
        return found | refused

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


def _broker_report(payload: bytes) -> None:
    """The broker's own report of dropped messages goes to /metrics."""
    try:
        DROPPED.set(int(payload))
    except ValueError:
        log.warning("MQTT: unreadable %s: %r", BROKER_DROPPED, payload[:40])


class _BrokerLost(Exception):
    """The connection to the broker closed."""


class _Client(gmqtt.Client):
    """A gmqtt client for one connection of a persistent MQTT 5 session (clean start off,
    the session expiry asked for, RECEIVE_MAXIMUM unacknowledged messages), each QoS 1 message
    acknowledged when `on_message` returns. gmqtt's own reconnecting is off: it would neither
    subscribe again (a restarted broker without persistence forgets the subscriptions) nor
    back off; the ingester makes a new client instead."""

    def __init__(
        self,
        session: str,
        expiry_s: int,
        on_message: Callable[[str, bytes, int], Awaitable[int]],
    ) -> None:
        super().__init__(
            session,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=expiry_s,
            receive_maximum=RECEIVE_MAXIMUM,
        )
        self.lost = asyncio.Event()
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def message(client: object, topic: str, payload: bytes, qos: int, _: object) -> int:
            return await on_message(topic, payload, qos)

        def suback(*_: object) -> None:
            if not self.subscribed.done():
                self.subscribed.set_result(None)

        self.on_message = message
        self.on_subscribe = suback
        self.on_disconnect = lambda *_: self.lost.set()

    async def reconnect(self, delay: bool = False) -> None:
        """gmqtt calls this when the connection closes: the ingester reconnects itself."""
        self.lost.set()


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
