"""The gateway in split mode: forwards /api/v1/* to the owning service over HTTP.

The caller's credentials travel on unchanged; every service verifies them itself.

Server-Sent Event streams (`/live`, `/alerts/stream`) hold their upstream connection for as long
as the client listens, so they have a pool of their own, and each caller (the user of a valid
token, else the client address) may hold at most `MAX_STREAMS_PER_CALLER` at once (429 beyond):
one user opening hundreds of streams once took every connection, and every other request
waited 30 s and failed.

The gateway is not ready while a service it forwards to does not answer: its /readyz probes each
upstream's /healthz (alive, not /readyz: a service's own store outage is that service's to
report, and would otherwise take the whole gateway out of a load balancer), all at once with a
short timeout, and keeps the answer briefly, so that /readyz stays fast however often it is
asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from energy_tracker.core.auth import token_principal
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


MAX_STREAMS_PER_CALLER = 10
_STREAM_PATHS = ("/live", "/alerts/stream")
# An upstream slower than this to answer /healthz counts as down; an answer is reused this long.
PROBE_TIMEOUT_S = 1.0
PROBE_TTL_S = 2.0


class ProxyClients:
    """The gateway's two connection pools (requests, and the long-lived streams) and what it
    knows of its upstreams' health."""

    def __init__(self, upstreams: dict[str, str]) -> None:
        self.upstreams = upstreams
        self._probe_lock = asyncio.Lock()
        self._probed: tuple[float, list[str]] | None = None
        self.requests = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), limits=httpx.Limits(max_connections=200)
        )
        # No read timeout: a stream is quiet between events (a comment every 15 s at most).
        self.streams = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0), limits=httpx.Limits(max_connections=2000)
        )
        self.open_streams: Counter[str] = Counter()

    @property
    def is_closed(self) -> bool:
        return self.requests.is_closed and self.streams.is_closed

    async def aclose(self) -> None:
        await self.requests.aclose()
        await self.streams.aclose()

    async def unreachable(self) -> list[str]:
        """The upstream services that do not answer /healthz, and why (for /readyz): probed
        concurrently, at most once per PROBE_TTL_S (callers meanwhile share the last answer)."""
        async with self._probe_lock:
            if self._probed is None or time.monotonic() - self._probed[0] >= PROBE_TTL_S:
                answers = await asyncio.gather(
                    *(self._probe(base) for base in self.upstreams.values())
                )
                down = [
                    f"{service} service: {why}"
                    for service, why in zip(self.upstreams, answers, strict=True)
                    if why is not None
                ]
                self._probed = (time.monotonic(), down)
            return self._probed[1]

    async def _probe(self, base: str) -> str | None:
        """None when the upstream at `base` answers /healthz with 200; otherwise what it did."""
        try:
            r = await self.requests.get(base.rstrip("/") + "/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if r.status_code == 200 else f"HTTP {r.status_code}"


def _caller(request: Request) -> str:
    """Whose streams these are: the user of a session's token or the personal access token,
    when genuine, else the IP."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        state = request.app.state
        whose = token_principal(
            token.strip(), secret=state.secret, issuer=state.settings.jwt_issuer
        )
        if whose is not None:
            return whose
    return f"ip:{request.client.host if request.client else 'unknown'}"


def install_proxy(app: FastAPI, upstreams: dict[str, str]) -> ProxyClients:
    """Route every /api/v1 request to `upstreams[service]` (a base URL); the caller closes the
    returned clients at shutdown."""
    clients = ProxyClients(upstreams)

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
        streaming = request.method == "GET" and request.url.path.endswith(_STREAM_PATHS)
        client = clients.streams if streaming else clients.requests
        caller = _caller(request) if streaming else ""
        if streaming and clients.open_streams[caller] >= MAX_STREAMS_PER_CALLER:
            return error_response(
                429,
                "rate_limited",
                f"at most {MAX_STREAMS_PER_CALLER} open streams per caller: close one first",
                headers={"Retry-After": "5"},
            )
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
        if not streaming:
            response = StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                headers=out_headers,
                background=BackgroundTask(upstream.aclose),
            )
            # Each cookie stays a header of its own (joined with commas they would not parse).
            response.raw_headers.extend(
                (b"set-cookie", v.encode("latin-1"))
                for v in upstream.headers.get_list("set-cookie")
            )
            return response
        clients.open_streams[caller] += 1

        async def relay() -> AsyncIterator[bytes]:
            # Counted until the relay ends, however it ends (the client gone, the upstream
            # done, the gateway stopping).
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                clients.open_streams[caller] -= 1
                if clients.open_streams[caller] <= 0:
                    del clients.open_streams[caller]
                await upstream.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, headers=out_headers)

    return clients
