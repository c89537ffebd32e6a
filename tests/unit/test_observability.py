"""What the dashboards and the log collector read (core/http.py), in-process, no I/O: request
metrics labelled by route template, and JSON log lines carrying the request id."""

from __future__ import annotations

import logging
import sys

import httpx
import orjson
from fastapi import FastAPI
from prometheus_client import REGISTRY

from energy_tracker.core.http import (
    JsonFormatter,
    RequestIdFilter,
    RequestIdMiddleware,
    install_error_handlers,
    request_id_var,
)


def requests_seen(service: str, route: str, status: str) -> float:
    labels = {"service": service, "method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("et_http_request_duration_seconds_count", labels) or 0.0


async def test_requests_are_counted_by_route_template_not_by_path() -> None:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware, service="metrics-test")
    install_error_handlers(app)

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for thing_id in ("a", "b", "c"):
            assert (await http.get(f"/things/{thing_id}")).status_code == 200
        assert (await http.get("/no/such/path")).status_code == 404

    assert requests_seen("metrics-test", "/things/{thing_id}", "200") == 3
    assert requests_seen("metrics-test", "unmatched", "404") == 1
    assert requests_seen("metrics-test", "/things/a", "200") == 0


def test_json_log_lines_carry_the_request_id_and_the_exception() -> None:
    formatter, id_filter = JsonFormatter(), RequestIdFilter()
    token = request_id_var.set("rid-json")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "energy_tracker.x",
                logging.ERROR,
                __file__,
                1,
                "failed %s",
                ("here",),
                sys.exc_info(),
            )
        id_filter.filter(record)
    finally:
        request_id_var.reset(token)
    line = formatter.format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["request_id"] == "rid-json"
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "ERROR",
        "energy_tracker.x",
        "failed here",
    )
    assert parsed["ts"].endswith("Z") and "ValueError: boom" in parsed["exception"]
