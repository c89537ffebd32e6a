"""The gateway in split mode in front of a real alerts service: one caller holds at most
MAX_STREAMS_PER_CALLER event streams through it (429 beyond), and while they are open, the
same caller's and everyone else's ordinary requests go through."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from energy_tracker.app import create_app
from energy_tracker.config import Settings
from energy_tracker.core.rate_limits import parse_rate_limits
from energy_tracker.services.gateway.proxy import MAX_STREAMS_PER_CALLER
from tests.processes import free_port, served
from tests.service.test_alerts_api import running

API = "/api/v1"


async def test_a_caller_holds_a_bounded_number_of_streams(tmp_path: Path) -> None:
    async with running(tmp_path / "services") as services:
        upstream = f"http://127.0.0.1:{services.settings.http_port}"
        settings = Settings(
            data_dir=services.settings.data_dir,
            db_url=services.settings.db_url,
            jwt_secret=services.settings.jwt_secret,
            rate_limits=parse_rate_limits("off"),
            users_url=upstream,
            devices_url=upstream,
            alerts_url=upstream,
        )
        app = create_app(settings, [], gateway=True)
        async with (
            served(app, free_port()) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as http,
        ):
            ada = await services.user("ada@example.com")
            bob = await services.user("bob@example.com")
            async with contextlib.AsyncExitStack() as streams:
                for _ in range(MAX_STREAMS_PER_CALLER):
                    r = await streams.enter_async_context(
                        http.stream("GET", API + "/alerts/stream", headers=ada, timeout=None)
                    )
                    assert r.status_code == 200
                async with http.stream("GET", API + "/alerts/stream", headers=ada) as r:
                    assert r.status_code == 429
                    assert "open streams" in (await r.aread()).decode()
                for auth in (ada, bob):
                    r = await asyncio.wait_for(http.get(API + "/alerts", headers=auth), 10)
                    assert r.status_code == 200, r.text
                async with http.stream("GET", API + "/alerts/stream", headers=bob) as r:
                    assert r.status_code == 200
            # Closed streams are given back.
            async with http.stream("GET", API + "/alerts/stream", headers=ada) as r:
                assert r.status_code == 200
