"""/readyz (app.py, core/http.py): ready while the stores answer and every background worker
runs; 503 naming what is down once a worker stops or a store stops answering, or for a gateway
a service it forwards to. Embedded backends in a temporary directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import uvicorn

from energy_tracker.app import create_app, migrate
from tests.processes import embedded_settings, free_port

SECRET = "readiness-test-secret-0123456789-0123456789"


async def test_readyz_names_a_stopped_worker_and_a_store_that_does_not_answer(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(
        tmp_path, "readiness-test-secret-0123456789-0123456789", redis_url=None, mqtt_url=None
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


async def test_a_gateway_is_not_ready_while_a_service_it_forwards_to_does_not_answer(
    tmp_path: Path,
) -> None:
    """The gateway in split mode in front of a real users+devices process: ready while it
    answers; once it has stopped, /readyz is 503 naming each service it served, and /healthz
    stays 200. A service at an address where nothing listens is named from the start."""
    upstream_settings = embedded_settings(tmp_path / "upstream", SECRET, http_port=free_port())
    await migrate(upstream_settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(upstream_settings, ["users", "devices"], gateway=False),
            host="127.0.0.1",
            port=upstream_settings.http_port,
            log_config=None,
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.02)
        upstream = f"http://127.0.0.1:{upstream_settings.http_port}"
        gateway = create_app(
            embedded_settings(
                tmp_path / "gateway", SECRET, users_url=upstream, devices_url=upstream
            ),
            [],
            gateway=True,
        )
        async with (
            gateway.router.lifespan_context(gateway),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
            ) as http,
        ):
            r = await http.get("/readyz")
            assert r.status_code == 200, r.text

            server.should_exit = True
            await asyncio.wait_for(serving, 20)
            for _ in range(100):  # the last answer is kept for PROBE_TTL_S
                r = await http.get("/readyz")
                if r.status_code != 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 503
            assert r.json()["failing"] == [
                "users service: ConnectError",
                "devices service: ConnectError",
            ]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)

    nobody = f"http://127.0.0.1:{free_port()}"  # a port bound once and closed: nothing listens
    lonely = create_app(
        embedded_settings(tmp_path / "lonely", SECRET, alerts_url=nobody), [], gateway=True
    )
    async with (
        lonely.router.lifespan_context(lonely),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=lonely), base_url="http://gw") as http,
    ):
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["failing"] == ["alerts service: ConnectError"]
