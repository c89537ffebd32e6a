"""The composition root: each service's builder wires only what that service needs, and the
app's lifespan closes what create_app opened (the gateway's proxy client) and stops the runtime,
even when wiring a service fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from energy_tracker.app import SERVICES, create_app, migrate
from energy_tracker.config import Settings
from tests.processes import embedded_settings


def embedded(tmp_path: Path, **options: object) -> Settings:
    return embedded_settings(
        tmp_path, "composition-test-secret-0123456789abcdef", rate_limits=None, **options
    )


async def test_a_gateway_closes_its_proxy_client_when_it_stops(tmp_path: Path) -> None:
    settings = embedded(tmp_path, usage_url="http://127.0.0.1:9")
    await migrate(settings)
    app = create_app(settings, ["users"], gateway=True)
    proxy = app.state.proxy_client
    assert proxy is not None and not proxy.is_closed
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert not proxy.is_closed
    assert proxy.is_closed


async def test_each_service_wires_only_its_own_parts(tmp_path: Path) -> None:
    settings = embedded(tmp_path)
    await migrate(settings)
    app = create_app(settings, ["users", "devices", "usage"], gateway=False)
    async with app.router.lifespan_context(app):
        # Shared by every service: the stores, the device directory and authentication.
        assert app.state.directory is app.state.devices
        assert app.state.authenticator is not None
        assert app.state.stored_readings is not None  # usage's
        assert not hasattr(app.state, "recorder")  # ingestion's: not served here
        assert not hasattr(app.state, "alerts")
    assert app.state.proxy_client is None


async def test_a_runtime_is_stopped_when_wiring_a_service_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded(tmp_path)
    await migrate(settings)
    stopped: list[object] = []

    def broken(*_: object) -> None:
        raise RuntimeError("wiring failed")

    async def record_stop(rt: object) -> None:
        stopped.append(rt)
        await real_stop(rt)  # type: ignore[arg-type]

    from energy_tracker import app as root

    real_stop = root.stop_runtime
    monkeypatch.setattr(root, "stop_runtime", record_stop)
    monkeypatch.setitem(SERVICES, "usage", dataclasses.replace(SERVICES["usage"], wire=broken))
    app = create_app(settings, ["usage"], gateway=False)
    with pytest.raises(RuntimeError, match="wiring failed"):
        async with app.router.lifespan_context(app):
            pass
    assert len(stopped) == 1


def test_every_operation_documents_the_errors_it_can_answer(tmp_path: Path) -> None:
    # The households routes are a router included in the users one; the statuses were once
    # added to the users service's own routes only, and GET /households answered an expired
    # token's 401 that its document did not list; POST /devices a 404 for a body's
    # household_id (both found by `make fuzz`).
    schema = create_app(embedded(tmp_path), list(SERVICES), gateway=True).openapi()
    operations = {
        f"{method.upper()} {path}": set(operation["responses"])
        for path, methods in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in methods.items()
    }
    assert "GET /api/v1/households" in operations
    missing = {op: {"422", "429", "503"} - got for op, got in operations.items()}
    assert {op: m for op, m in missing.items() if m} == {}
    assert {"401", "403"} <= operations["GET /api/v1/households"]
    # A body's household_id that is not the caller's is a 404, as a query's is.
    assert "404" in operations["POST /api/v1/devices"]
