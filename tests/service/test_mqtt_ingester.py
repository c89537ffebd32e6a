"""The MQTT ingester's decisions over the real embedded stores and bus: good messages published
as readings, every bad one dead-lettered whole with its reason, one bad message never holding
back the good ones of its batch; and, against a private Mosquitto, batches of what arrived and
several ingesters sharing one subscription (the process-level cases are in tests/e2e)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.publish
import pytest

from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.events import ENERGY_READINGS, Reading, parse_readings_recorded
from energy_tracker.core.stores.credential_changes import CredentialChanges
from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.ingestion import mqtt
from energy_tracker.services.ingestion.mqtt import MqttIngester, Received
from energy_tracker.services.ingestion.recorder import ReadingRecorder
from energy_tracker.services.users.store import UserStore
from tests.e2e.test_mqtt_broker import Mosquitto

MIN = 60_000
# The receive time given to every message: the real clock's (on a whole minute), so the readings
# stay inside the 400-day window around it whenever the suite runs. A fixed date would be
# refused once the real clock had moved 400 days past it.
NOW = int(time.time() * 1000) // MIN * MIN


@dataclass
class Setup:
    ingester: MqttIngester
    bus: EmbeddedBus
    devices: DeviceStore
    plug: str
    disabled: str
    db: Database

    async def drain(self, topic: str) -> list[bytes]:
        consumer = await self.bus.subscribe(topic, "test-reader")
        try:
            return [m.value for m in await consumer.poll(10_000, 0.3)]
        finally:
            await consumer.close()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    db = Database(f"sqlite:///{tmp_path}/meta.db")
    bus = EmbeddedBus(str(tmp_path / "bus.db"))
    await db.start()
    await db.migrate()
    await bus.start()
    await bus.ensure_topics([ENERGY_READINGS, f"{ENERGY_READINGS}.dlq"])
    user = await UserStore(db).create("owner@example.com", "x")
    devices = DeviceStore(db)
    plug = await devices.create(user.id, "plug", "plug", "a" * 64, meta={"tasmota_topic": "p1"})
    off = await devices.create(user.id, "off", "plug", "b" * 64)
    await devices.update(off.id, disabled=True)
    for key, name in (("c", "twin"), ("d", "twin")):
        await devices.create(user.id, name, "plug", key * 64, meta={"tasmota_topic": "twin"})
    # A retention window of 400 days around the real clock, which NOW is on.
    recorder = ReadingRecorder(bus, devices, retention_days=400)
    try:
        changes = CredentialChanges(db).version
        ingester = MqttIngester("mqtt://127.0.0.1:1", recorder, devices, changes=changes)
        yield Setup(ingester, bus, devices, plug.id, off.id, db)
    finally:
        await bus.stop()
        await db.stop()


def message(topic: str, body: object) -> Received:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return Received(topic, payload, NOW)


async def test_good_and_bad_messages_of_one_batch(setup: Setup) -> None:
    plug, off = setup.plug, setup.disabled
    batch = [
        message(f"et/{plug}/readings", {"ts": NOW - MIN, "power_w": 10.0}),
        message(f"et/{plug}/readings", b"{oops"),
        message("et/no-such-device/readings", {"ts": NOW, "power_w": 1.0}),
        message(f"et/{off}/readings", {"ts": NOW, "power_w": 1.0}),
        message(f"et/{plug}/readings", [{"ts": NOW, "power_w": 1.0}, {"ts": 0, "power_w": 2.0}]),
        message("tele/p1/SENSOR", {"ENERGY": {"Total": 1.5, "Power": 20}}),
        message("tele/twin/SENSOR", {"ENERGY": {"Total": 1.5, "Power": 20}}),
        message("tele/p1/SENSOR", {"DS18B20": {"Temperature": 21.5}}),
        message(f"et/{plug}/readings", {"apower": 30.0, "aenergy": {"total": 99.0}}),
    ]
    await setup.ingester.handle(batch)

    published = [r for v in await setup.drain(ENERGY_READINGS) for r in parse_readings_recorded(v)]
    assert published == [
        Reading(plug, NOW - MIN, power_w=10.0),
        Reading(plug, NOW, power_w=20.0, energy_wh=1500.0),
        Reading(plug, NOW, power_w=30.0, energy_wh=99.0),
    ]
    letters = [orjson.loads(v)["data"] for v in await setup.drain(f"{ENERGY_READINGS}.dlq")]
    # Dead letters are keyed by device (or Tasmota name), so they come back partition by
    # partition: compared in any order. A JSON error's position in the text is cut off.
    got = sorted(
        (
            x["source"]["mqtt_topic"],
            x["error"][:8] if x["error"].startswith("not JSON") else x["error"],
            base64.b64decode(x["value_b64"]),
        )
        for x in letters
    )
    assert got == sorted(
        [
            (f"et/{plug}/readings", "not JSON", b"{oops"),
            ("et/no-such-device/readings", "device_id: unknown device", batch[2].payload),
            (f"et/{off}/readings", "device_id: device is disabled", batch[3].payload),
            (f"et/{plug}/readings", "ts: older than the retention window", batch[4].payload),
            (
                "tele/twin/SENSOR",
                "unknown device: 2 devices have metadata tasmota_topic='twin'",
                batch[6].payload,
            ),
            ("tele/p1/SENSOR", "no ENERGY block in the Tasmota SENSOR message", batch[7].payload),
        ]
    )


async def test_a_remapped_tasmota_name_is_found_after_the_cache_expires(setup: Setup) -> None:
    await setup.ingester.handle([message("tele/newname/SENSOR", {"ENERGY": {"Power": 5}})])
    await setup.devices.update(setup.plug, meta={"tasmota_topic": "newname"})
    setup.ingester._names.clear()  # what NAME_TTL_S seconds would do
    await setup.ingester.handle([message("tele/newname/SENSOR", {"ENERGY": {"Power": 5}})])
    published = [r for v in await setup.drain(ENERGY_READINGS) for r in parse_readings_recorded(v)]
    assert published == [Reading(setup.plug, NOW, power_w=5.0)]
    letters = [orjson.loads(v)["data"] for v in await setup.drain(f"{ENERGY_READINGS}.dlq")]
    assert [x["error"] for x in letters] == [
        "unknown device: no device has metadata tasmota_topic='newname'"
    ]


async def test_a_device_disabled_is_refused_once_the_change_counter_moves(setup: Setup) -> None:
    """Devices are remembered between batches, until the credential change counter moves."""
    plug = setup.plug
    await setup.ingester.handle([message(f"et/{plug}/readings", {"ts": NOW - MIN, "power_w": 1})])
    await setup.devices.update(plug, disabled=True)
    await CredentialChanges(setup.db).bump()  # what disabling it through the API does
    setup.ingester._next_check = 0.0  # what CHECK_EVERY_S seconds would do
    await setup.ingester.handle([message(f"et/{plug}/readings", {"ts": NOW, "power_w": 2})])
    published = [r for v in await setup.drain(ENERGY_READINGS) for r in parse_readings_recorded(v)]
    assert published == [Reading(plug, NOW - MIN, power_w=1.0)]
    letters = [orjson.loads(v)["data"] for v in await setup.drain(f"{ENERGY_READINGS}.dlq")]
    assert [x["error"] for x in letters] == ["device_id: device is disabled"]


@contextlib.asynccontextmanager
async def receiving(*ingesters: MqttIngester) -> AsyncIterator[None]:
    """The ingesters running against their broker, each subscribed, until the block ends."""
    tasks = [asyncio.create_task(i.run()) for i in ingesters]
    try:
        async with asyncio.timeout(30):
            while not all(i.ready for i in ingesters):
                for t in tasks:
                    if t.done():
                        t.result()
                await asyncio.sleep(0.05)
        yield
    finally:
        for i in ingesters:
            i.stop()
        await asyncio.gather(*tasks)


async def published_readings(setup: Setup, want: int) -> tuple[list[Reading], int]:
    """The readings on `energy-readings` once there are `want` (or after 30 s), and the number
    of bus records that carried them."""
    consumer = await setup.bus.subscribe(ENERGY_READINGS, "test-counter")
    readings: list[Reading] = []
    records = 0
    try:
        deadline = time.monotonic() + 30
        while len(readings) < want and time.monotonic() < deadline:
            for m in await consumer.poll(10_000, 0.2):
                records += 1
                readings += parse_readings_recorded(m.value)
    finally:
        await consumer.close()
    return readings, records


def publish(port: int, device: str, times: list[int]) -> None:
    paho.mqtt.publish.multiple(
        [
            {
                "topic": f"et/{device}/readings",
                "payload": orjson.dumps({"ts": ts, "power_w": 100.0}),
                "qos": 1,
            }
            for ts in times
        ],
        hostname="127.0.0.1",
        port=port,
    )


async def test_ingesters_sharing_a_subscription_take_each_message_once(
    setup: Setup, tmp_path: Path
) -> None:
    """Two ingesters in one shared-subscription group (`?shared=`): the broker hands each
    message to one of them, so the 600 readings are on the bus once each, and both took some."""
    broker = Mosquitto(tmp_path)
    try:
        recorder = setup.ingester.recorder
        first, second = (
            MqttIngester(
                f"mqtt://127.0.0.1:{broker.port}?shared=ingest&client_id=ingest-{n}",
                recorder,
                setup.devices,
            )
            for n in (1, 2)
        )
        times = [NOW - 600 * MIN + i * MIN for i in range(600)]
        async with receiving(first, second):
            await asyncio.to_thread(publish, broker.port, setup.plug, times)
            readings, _ = await published_readings(setup, 600)
        assert sorted(r.ts for r in readings) == times
        assert {r.device_id for r in readings} == {setup.plug}
        assert first.taken > 0 and second.taken > 0
        assert first.taken + second.taken == 600
    finally:
        broker.stop()


async def test_a_burst_larger_than_a_batch_arrives_whole(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 messages against batches of at most 100: at least ten bus writes, every reading
    once (1,000 minutes, each 100 W), none acknowledged before its batch was on the bus."""
    monkeypatch.setattr(mqtt, "MAX_BATCH_MESSAGES", 100)
    broker = Mosquitto(tmp_path)
    try:
        ingester = MqttIngester(
            f"mqtt://127.0.0.1:{broker.port}", setup.ingester.recorder, setup.devices
        )
        times = [NOW - 1000 * MIN + i * MIN for i in range(1000)]
        async with receiving(ingester):
            await asyncio.to_thread(publish, broker.port, setup.plug, times)
            readings, records = await published_readings(setup, 1000)
        assert readings == [Reading(setup.plug, ts, power_w=100.0) for ts in times]
        assert records >= 10
        assert ingester.taken == 1000
    finally:
        broker.stop()
