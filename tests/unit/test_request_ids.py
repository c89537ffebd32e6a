"""Request ids and errors of every service's app (core/http.py), in-process, no I/O."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from energy_tracker.core.http import RequestIdFilter, RequestIdMiddleware, install_error_handlers


class Body(BaseModel):
    name: str


def make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware, service="test")
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a detail only the log may see")

    @app.post("/things")
    async def things(body: Body) -> dict[str, str]:
        return {"name": body.name}

    return app


@pytest.fixture
def http() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_unhandled_error_is_a_json_500_with_the_request_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        r = await http.get("/boom", headers={"X-Request-Id": "rid-boom"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "rid-boom"
    assert r.json() == {
        "error": {
            "code": "internal",
            "message": "internal error",
            "details": {"request_id": "rid-boom"},
        }
    }
    assert "only the log may see" not in r.text and "Traceback" not in r.text
    logged = {(rec.name, rec.getMessage().split(" ")[0], rec.request_id) for rec in caplog.records}  # type: ignore[attr-defined]
    assert ("energy_tracker.core.http", "unhandled", "rid-boom") in logged
    assert ("energy_tracker.access", "GET", "rid-boom") in logged


async def test_every_response_gets_an_id_of_its_own_when_the_caller_sends_none(
    http: httpx.AsyncClient,
) -> None:
    first, second = await http.post("/things", json={"name": "a"}), await http.get("/nowhere")
    assert (first.status_code, second.status_code) == (200, 404)
    assert len({first.headers["x-request-id"], second.headers["x-request-id"]}) == 2


async def test_a_body_that_is_not_json_is_named_as_such(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/things", content=b'{"name": "a"', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == "body"
    assert detail["message"].startswith("not valid JSON at character 12")
