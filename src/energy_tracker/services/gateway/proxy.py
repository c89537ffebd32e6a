"""The gateway in split mode: forwards /api/v1/* to the owning service over HTTP.

The caller's credentials travel on unchanged; every service verifies them itself.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from energy_tracker.core.http import error_response, request_id_var
from energy_tracker.services.gateway.routes import API_PREFIX, service_for

log = logging.getLogger(__name__)

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
    "content-length",
}


def install_proxy(app: FastAPI, upstreams: dict[str, str]) -> httpx.AsyncClient:
    """Route every /api/v1 request to `upstreams[service]` (a base URL); the caller closes the
    returned client at shutdown."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0), limits=httpx.Limits(max_connections=200)
    )

    @app.api_route(
        API_PREFIX + "/{path:path}",
        include_in_schema=False,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    )
    async def forward(path: str, request: Request) -> Response:
        service = service_for("/" + path)
        base = upstreams.get(service or "")
        if base is None:
            return error_response(404, "not_found", f"no service serves {request.url.path}")
        # The request id travels as the gateway settled it, so both processes log the same one.
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "x-request-id"
        ]
        headers.append(("x-request-id", request_id_var.get()))
        forwarded = client.build_request(
            request.method,
            base.rstrip("/") + request.url.path,
            params=request.query_params,
            headers=headers,
            content=request.stream(),
        )
        try:
            upstream = await client.send(forwarded, stream=True)
        except httpx.HTTPError as exc:
            log.warning("%s unreachable at %s: %s", service, base, exc)
            return error_response(
                503,
                "unavailable",
                f"the {service} service is unavailable",
                headers={"Retry-After": "5"},
            )
        out_headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("x-request-id", "set-cookie")
        }
        response = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=out_headers,
            background=BackgroundTask(upstream.aclose),
        )
        # Each cookie stays a header of its own (joined with commas they would not parse).
        response.raw_headers.extend(
            (b"set-cookie", v.encode("latin-1")) for v in upstream.headers.get_list("set-cookie")
        )
        return response

    return client
