"""The alerts service's parts over the real embedded bus and metadata database, with a clock
the test moves and a real webhook receiver on loopback: the harness of the alerts service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.events import (
    ALERT_EVENTS,
    ENERGY_READINGS,
    TOPICS,
    USAGE_EVENTS,
    Reading,
    readings_recorded,
    usage_updated,
)
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import Bucket
from energy_tracker.services.alerts.consumer import AlertEvaluator
from energy_tracker.services.alerts.models import Alert, AlertRule, Delivery
from energy_tracker.services.alerts.notify import Dispatcher, RetryPolicy
from energy_tracker.services.alerts.store import AlertStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.store import UserStore
from tests.alert_receivers import WebhookReceiver

SECRET = "hook-secret-0123"


class Clock:
    """The service's clock, moved by the test; starts at the next whole second of real time,
    after anything the fixtures created."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 1)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def ms(self, offset_s: float = 0.0) -> int:
        return round((self.now + offset_s) * 1000)


@dataclass
class Alerting:
    db: Database
    bus: EmbeddedBus
    store: AlertStore
    evaluator: AlertEvaluator
    dispatcher: Dispatcher
    clock: Clock
    user_id: str
    household_id: str
    device_id: str
    other_device_id: str
    hook_url: str
    offset: int = 0

    def message(self, topic: str, record: tuple[bytes, bytes]) -> Message:
        self.offset += 1
        return Message(topic, 0, self.offset, *record)

    async def readings(self, *rows: tuple[float, float], device: str | None = None) -> None:
        """One message of (seconds from now, watts) readings, handed to the consumer."""
        device = device or self.device_id
        batch = [Reading(device, self.clock.ms(s), power_w=w) for s, w in rows]
        message = self.message(ENERGY_READINGS, readings_recorded(device, batch))
        assert await self.evaluator.handle_readings([message]) == []

    async def usage(self, bucket: Bucket) -> None:
        message = self.message(USAGE_EVENTS, usage_updated(bucket))
        assert await self.evaluator.handle_usage([message]) == []

    async def rule(self, **fields: Any) -> AlertRule:
        values: dict[str, Any] = {
            "name": "kettle on",
            "device_id": self.device_id,
            "metric": "power_w",
            "period": "instant",
            "op": "gt",
            "threshold": 2000.0,
            "clear_threshold": 1500.0,
            "for_s": 0,
            "cooldown_s": 0,
            "severity": "warning",
            "channels": [{"type": "webhook", "url": self.hook_url, "secret": SECRET}],
        }
        values.update(fields)
        return await self.store.rules.create(
            self.user_id, self.household_id, at(self.clock()), **values
        )

    async def alerts(self) -> list[Alert]:
        return await self.store.alerts.list(None)

    async def deliveries(self) -> list[Delivery]:
        found = await self.store.deliveries.of_alerts([a.id for a in await self.alerts()])
        return sorted(
            (d for ds in found.values() for d in ds), key=lambda d: (d.created_at, d.event)
        )

    async def events(self) -> list[dict[str, Any]]:
        """Everything on `alert-events` so far."""
        consumer = await self.bus.subscribe(ALERT_EVENTS, f"reader-{self.offset}-{time.time()}")
        try:
            return [orjson.loads(m.value)["data"] for m in await consumer.poll(10_000, 0.3)]
        finally:
            await consumer.close()

    async def notify(
        self, until: Callable[[list[Delivery]], bool], step_s: float = 0.1, rounds: int = 200
    ) -> list[Delivery]:
        """Run the dispatcher, moving the clock `step_s` a round (so retries come due), until
        `until(deliveries)` holds; TimeoutError after `rounds` rounds."""
        for _ in range(rounds):
            await self.dispatcher.dispatch_due()
            await self.dispatcher.settle()
            found = await self.deliveries()
            if until(found):
                return found
            self.clock.advance(step_s)
            await asyncio.sleep(0.01)
        raise TimeoutError(f"deliveries never got there: {found}")

    async def use_dispatcher(self, **options: Any) -> Dispatcher:
        """Replace the dispatcher by one with other options (the clock stays the test's)."""
        await self.close_dispatcher()
        self.dispatcher = Dispatcher(self.store.deliveries, clock=self.clock, **options)
        return self.dispatcher

    async def close_dispatcher(self) -> None:
        self.dispatcher.stop()
        await self.dispatcher.run()  # returns at once when stopped, closing its HTTP client


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Wait until `check()` holds, polling; TimeoutError after `timeout_s`."""
    for _ in range(int(timeout_s / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"still not true after {timeout_s} s")


def delivered(count: int) -> Callable[[list[Delivery]], bool]:
    return lambda found: sum(d.status == "delivered" for d in found) >= count


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
async def alerting(tmp_path: Path, webhook: WebhookReceiver) -> AsyncIterator[Alerting]:
    db = Database(f"sqlite:///{tmp_path}/meta.db")
    bus = EmbeddedBus(str(tmp_path / "bus.db"), 1)
    await db.start()
    await db.migrate()
    await bus.start()
    await bus.ensure_topics([*TOPICS, *(f"{t}.dlq" for t in TOPICS)])
    user = await UserStore(db).create("owner@example.com", "x")
    devices = DeviceStore(db)
    device = await devices.create(user.id, "kettle plug", "plug", "1" * 64)
    other = await devices.create(user.id, "heat pump", "heat_pump", "2" * 64)
    clock = Clock()
    store = AlertStore(db)
    dispatcher = Dispatcher(
        store.deliveries,
        smtp=None,
        deny_private=False,
        retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.05, window_s=600),
        clock=clock,
    )
    evaluator = AlertEvaluator(bus, store, devices, max_gap_ms=900_000, clock=clock)
    harness = Alerting(
        db,
        bus,
        store,
        evaluator,
        dispatcher,
        clock,
        user.id,
        device.household_id,
        device.id,
        other.id,
        webhook.url,
    )
    try:
        yield harness
    finally:
        await harness.close_dispatcher()
        await harness.bus.stop()
        await db.stop()
