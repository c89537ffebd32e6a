"""/readyz (app.py, core/http.py): ready while the stores answer and every background worker
runs; 503 naming what is down once a worker stops or a store stops answering. Embedded
backends in a temporary directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from energy_tracker.app import create_app, migrate
from energy_tracker.config import Settings


async def test_readyz_names_a_stopped_worker_and_a_store_that_does_not_answer(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        db_url=None,
        bus_url=None,
        tsdb_url=None,
        redis_url=None,
        mqtt_url=None,
        jwt_secret="readiness-test-secret-0123456789-0123456789",
    )
    await migrate(settings)
    app = create_app(settings, ["usage"], gateway=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://usage") as http,
    ):
        rt = app.state.runtime
        for _ in range(300):  # the consumer joins its group: up to 30 s
            r = await http.get("/readyz")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert r.json() == {"status": "ready"}
        names = [task.get_name() for task in rt.tasks]
        assert names == ["usage:energy-readings", "usage:retention"]

        rt.loops[1].stop()  # retention ends, as if it had crashed
        await rt.tasks[1]
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "not ready", "failing": ["usage:retention"]}

        await rt.series.stop()
        r = await http.get("/readyz")
        assert r.status_code == 503
        failing = r.json()["failing"]
        assert failing[0] == "usage:retention"
        assert failing[1].startswith("series store: ")
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
