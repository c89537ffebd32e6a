"""Ingestion while the Kafka-protocol broker is away (a private Tansu, killed and started again
on its port): readings are refused with 503 and Retry-After, never accepted with 202 and then
lost; once the broker is back, they are accepted again and reach the topic."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from energy_tracker.app import create_app, migrate
from energy_tracker.config import Settings
from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.events import ENERGY_READINGS, parse_readings_recorded
from energy_tracker.core.rate_limits import parse_rate_limits
from tests.kafka_broker import tansu

API = "/api/v1"
PASSWORD = "correct horse battery"


@pytest.mark.kafka
async def test_readings_are_refused_with_503_while_the_bus_is_away(tmp_path: Path) -> None:
    with tansu() as broker:
        settings = Settings(
            data_dir=tmp_path / "data",
            db_url=None,
            bus_url=broker.url,
            redis_url=None,
            jwt_secret="service-test-secret-0123456789-0123456789",
            rate_limits=parse_rate_limits("off"),
        )
        await migrate(settings)
        app = create_app(settings, ["users", "devices", "ingestion"], gateway=True)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                body = {"email": "a@example.com", "password": PASSWORD}
                await http.post(API + "/auth/register", json=body)
                token = (await http.post(API + "/auth/login", json=body)).json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                r = await http.post(
                    API + "/devices", headers=auth, json={"name": "m", "type": "meter"}
                )
                key = {"X-Device-Key": r.json()["api_key"]}
                now = int(time.time() * 1000)

                async def send(ts: int) -> httpx.Response:
                    return await http.post(
                        API + "/readings", headers=key, json={"ts": ts, "power_w": 5.0}, timeout=60
                    )

                assert (await send(now)).status_code == 202
                broker.proc.kill()
                broker.proc.wait()
                r = await send(now + 1)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "unavailable"
                assert int(r.headers["retry-after"]) >= 1

                with tansu(broker.port) as again:  # the same address
                    # An empty broker in memory: its topics are made again, as a broker that
                    # kept its log would still have them.
                    bus = bus_from_url(again.url, settings.bus_partitions)
                    await bus.start()
                    try:
                        await bus.ensure_topics([ENERGY_READINGS])
                        accepted = []
                        for i in range(2, 40):
                            r = await send(now + i)
                            assert r.status_code in (202, 503), r.text
                            if r.status_code == 202:
                                accepted.append(now + i)
                                break
                        assert accepted, "the bus never came back"
                        # What was accepted is on the topic.
                        consumer = await bus.subscribe(ENERGY_READINGS, "probe")
                        seen: list[int] = []
                        for _ in range(30):
                            for m in await consumer.poll(100, 1.0):
                                seen += [r.ts for r in parse_readings_recorded(m.value)]
                            if seen:
                                break
                        await consumer.close()
                    finally:
                        await bus.stop()
                    assert accepted[0] in seen
