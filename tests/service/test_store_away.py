"""A request that finds its store away (core/http.py): 503 with Retry-After, which clients retry,
not a 500, which says the request itself broke something. Found by the fault suite
(tests/chaos): during a MariaDB restart, POST /readings answered 500.

The metadata database is a private PostgreSQL this test starts and kills itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from energy_tracker.app import create_app, migrate
from tests.e2e.accounts import PASSWORD
from tests.private_servers import private_postgres
from tests.processes import embedded_settings


@pytest.mark.postgres
async def test_a_request_whose_store_is_away_answers_503(tmp_path: Path) -> None:
    with private_postgres(tmp_path) as server:
        settings = embedded_settings(
            tmp_path,
            "store-away-test-secret-0123456789-0123456789",
            db_url=server.url,
            redis_url=None,
            mqtt_url=None,
        )
        await migrate(settings)
        app = create_app(settings, ["users"], gateway=False)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://users") as http,
        ):
            account = {"email": "ada@example.com", "password": PASSWORD}
            assert (await http.post("/api/v1/auth/register", json=account)).status_code == 201

            await asyncio.to_thread(server.kill)
            r = await http.post("/api/v1/auth/login", json=account)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            assert r.headers["retry-after"] == "5"

            await asyncio.to_thread(server.start)
            # The pool drops the connections the crash cut and opens new ones: the first
            # request after the restart may still find a dead one (503 again), never a 500.
            statuses = []
            for _ in range(20):
                r = await http.post("/api/v1/auth/login", json=account)
                statuses.append(r.status_code)
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.5)
            assert statuses[-1] == 200, statuses
