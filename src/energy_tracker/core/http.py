"""What every service's HTTP app shares: JSON errors, request ids, health, metrics, the caller.

Errors are `{"error": {"code", "message", "details"}}`; nothing a client sees carries a traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from energy_tracker.core.auth import (
    PERSONAL_TOKEN_PREFIX,
    AccessGrant,
    Identity,
    InvalidToken,
    personal_token_id,
    secret_digest,
    verify_access_token,
)
from energy_tracker.core.authz import Action, Caller, Need, route_rule
from energy_tracker.core.authz import not_found as not_found  # where the services find it
from energy_tracker.core.directory import DeviceContext, DeviceDirectory
from energy_tracker.core.errors import ApiError
from energy_tracker.core.failures import is_transient

log = logging.getLogger(__name__)
# One line per request (method, path without the query, status, time), to follow a request id
# through the gateway and the services; silence it with the level of `energy_tracker.access`.
access_log = logging.getLogger("energy_tracker.access")

REQUEST_ID_HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Rate, errors and latency by route: `route` is the route's template (`/devices/{device_id}`),
# never the raw path, so ids do not multiply the series; a path no route matched is `unmatched`.
HTTP_REQUESTS = Histogram(
    "et_http_request_duration_seconds",
    "HTTP requests: time from the request to the start of the response",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# A client can send any method name; only these become label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line (ET_LOG_FORMAT=json), for a log collector: time, level, logger,
    message, the request id, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


JsonFormatter.converter = time.gmtime


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RequestIdMiddleware:
    """Takes the caller's X-Request-Id (or makes one) and returns it on the response; logs each
    request, and answers an unhandled error with a 500 that carries the id as well (a 503 when
    the error says a store is away: `core.failures.is_transient`)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = (
            next(
                (v.decode("latin-1")[:128] for k, v in scope["headers"] if k == b"x-request-id"),
                None,
            )
            or uuid.uuid4().hex
        )
        token = request_id_var.set(rid)
        started, status = time.perf_counter(), None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message["headers"] = headers
                route = scope.get("route")
                HTTP_REQUESTS.labels(
                    self.service,
                    scope["method"] if scope["method"] in _METHODS else "other",
                    getattr(route, "path", None) or "unmatched",
                    str(status),
                ).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Starlette's last-resort handler sits outside every middleware, where the request
            # id is gone from both the log record and the response: answer here instead.
            if status is None and is_transient(exc):
                # A store (or the network) away mid-request is its failure, not the request's:
                # 503 and Retry-After, which clients retry, as they do when the bus is away.
                log.warning("a dependency is away (%s: %s): answered 503", type(exc).__name__, exc)
                await error_response(
                    503,
                    "unavailable",
                    "a store this service needs is unavailable; retry later",
                    {"request_id": rid},
                    {"Retry-After": "5"},
                )(scope, receive, send_with_id)
                return
            log.exception("unhandled error")
            if status is not None:
                raise
            await error_response(500, "internal", "internal error", {"request_id": rid})(
                scope, receive, send_with_id
            )
        finally:
            access_log.info(
                "%s %s %s %.1f ms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
            request_id_var.reset(token)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # its loc is a character offset, not a field
            where, why = err["loc"][-1], err.get("ctx", {}).get("error", "")
            out.append({"field": "body", "message": f"not valid JSON at character {where}: {why}"})
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        fields = ", ".join(d["field"] for d in details[:5])
        return error_response(422, "invalid", f"invalid request: {fields}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(
            exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None)
        )


def install_health(
    app: FastAPI,
    failing: Callable[[], Awaitable[list[str]]],
    metrics_text: Callable[[], Awaitable[bytes]] | None = None,
) -> None:
    """Unauthenticated /healthz (alive), /readyz (backends reachable, background workers
    running: `failing` names what is not) and /metrics (`metrics_text`, when this process
    reports other processes' metrics too, else its own)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        down = await failing()
        if down:
            return JSONResponse({"status": "not ready", "failing": down}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        text = generate_latest() if metrics_text is None else await metrics_text()
        return Response(text, media_type=CONTENT_TYPE_LATEST)


# -- the caller --------------------------------------------------------------------------------


class IdentityDirectory(Protocol):
    """What authentication needs from the metadata store, without importing any service."""

    async def user_role(self, user_id: str) -> str | None:
        """The current role of an active user; None when the account is disabled or gone."""

    async def devices_for_key_digests(
        self, digests: Collection[str]
    ) -> dict[str, tuple[str, str] | None]:
        """For each key digest, (device id, owner id) of the enabled device
        (`DeviceContext.enabled`) with that key; None for a digest of no such device."""

    async def memberships(self, user_id: str) -> tuple[tuple[str, str], ...]:
        """(household id, role) of each household the user belongs to, their own first."""

    async def access_grant(self, token_id: str) -> AccessGrant | None:
        """What is stored of a personal access token (revoked and expired ones too)."""

    async def token_used(self, token_id: str, at: datetime) -> None:
        """A request was authenticated by this personal access token at `at`."""

    async def credentials_version(self) -> int:
        """The change counter: moves whenever an answer above may have changed."""

    async def credentials_changed(self) -> int:
        """Move the change counter (after a change is committed); its new value."""


class Authenticator:
    """Turns request headers into an Identity, or refuses with 401 (or 403: a `read` token on a
    route that changes something)."""

    def __init__(self, directory: IdentityDirectory, secret: str, issuer: str) -> None:
        self.directory = directory
        self.secret = secret
        self.issuer = issuer

    async def identify(self, request: Request, *, allow_device: bool = False) -> Identity:
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise unauthorized("expected 'Authorization: Bearer <token>'")
            token = token.strip()
            if token.startswith(PERSONAL_TOKEN_PREFIX):
                identity = await self._personal(token)
            else:
                try:
                    identity = verify_access_token(token, secret=self.secret, issuer=self.issuer)
                except InvalidToken:
                    raise unauthorized("invalid or expired token") from None
            # The role comes from the account, not the token, so disabling or demoting a user
            # takes effect on their next request rather than when the token expires.
            role = await self.directory.user_role(identity.user_id)
            if role is None:
                raise unauthorized("account disabled or gone")
            # A read token's refusal, here where every bearer token passes, by the rule the one
            # authorization table gives the route (`core.authz.ROUTES`: whether it changes
            # anything), so that no route can forget it.
            if identity.read_only and route_rule(request).changes:
                raise forbidden("a read token cannot change anything: use a write token")
            if identity.token_id is not None:
                await self.directory.token_used(identity.token_id, datetime.now(UTC))
            households = await self.directory.memberships(identity.user_id)
            return Identity(
                "user",
                identity.user_id,
                role,
                households=households,
                token_id=identity.token_id,
                read_only=identity.read_only,
            )
        key = request.headers.get("x-device-key")
        if key and allow_device:
            digest = secret_digest(key)
            found = (await self.directory.devices_for_key_digests([digest])).get(digest)
            if found is None:
                raise unauthorized("invalid device key")
            device_id, owner_id = found
            return Identity("device", owner_id, "device", device_id)
        if key:
            raise ApiError(403, "forbidden", "a device key can only send readings")
        raise unauthorized("authentication required")

    async def still_valid(self, identity: Identity) -> bool:
        """Whether a caller identified a while ago (a stream's) may still be served: the account
        still active and its personal access token, if any, neither revoked nor expired. A
        session's JWT is not checked again: its refresh, not the stream, is what ends a session.
        Answered from the credential cache, so a long stream costs a query per TTL at most."""
        if await self.directory.user_role(identity.user_id) is None:
            return False
        if identity.token_id is None:
            return True
        grant = await self.directory.access_grant(identity.token_id)
        return grant is not None and _live(grant)

    async def _personal(self, token: str) -> Identity:
        """The user of a live personal access token (before their account is checked)."""
        try:
            token_id = personal_token_id(token, secret=self.secret)
        except InvalidToken:
            raise unauthorized("invalid personal access token") from None
        grant = await self.directory.access_grant(token_id)
        if grant is None or not hmac.compare_digest(grant.token_hash, secret_digest(token)):
            raise unauthorized("invalid personal access token")
        if grant.revoked:
            raise unauthorized("this personal access token was revoked")
        if not _live(grant):
            expired = grant.expires_at.isoformat() if grant.expires_at else "?"
            raise unauthorized(f"this personal access token expired at {expired}")
        return Identity("user", grant.user_id, token_id=token_id, read_only=grant.scope == "read")


def _live(grant: AccessGrant) -> bool:
    """Neither revoked nor expired."""
    return not grant.revoked and (grant.expires_at is None or grant.expires_at > datetime.now(UTC))


def caller_gone(request: Request, identity: Identity) -> Callable[[], Awaitable[bool]]:
    """For a long-lived stream: a check that says when its caller may no longer be served (the
    account disabled, the access token revoked or expired), so the stream ends then: at once in
    this process, within CHECK_EVERY_S when the change was made in another."""
    auth: Authenticator = request.app.state.authenticator

    async def gone() -> bool:
        return not await auth.still_valid(identity)

    return gone


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str = "not allowed") -> ApiError:
    return ApiError(403, "forbidden", message)


async def device_directory(request: Request) -> DeviceDirectory:
    """FastAPI dependency: the device directory the composition root injected."""
    directory: DeviceDirectory = request.app.state.directory
    return directory


async def read_directory(request: Request) -> DeviceDirectory:
    """FastAPI dependency: the device directory of read routes, which may answer from a
    `core.directory.DirectoryCache` (a change made in another process arrives within its
    TTL; one made in this process, at once)."""
    directory: DeviceDirectory = request.app.state.read_directory
    return directory


async def visible_device(
    caller: Caller, directory: DeviceDirectory, device_id: str, field: str | None = None
) -> DeviceContext:
    """The context of a device the caller may act on as the route's rule says; 404 when it is
    not in one of their households (the same answer as for an id that does not exist, so the
    ids of others are never confirmed), naming `field` when the id came from a query or body
    field rather than the path; 403 when their role there does not allow the action."""
    details = None if field is None else [{"field": field, "message": "not one of your devices"}]
    found = (await directory.contexts([device_id])).get(device_id)
    caller.check(found.household_id if found else None, "device", details)
    assert found is not None  # check() refused a missing device
    return found


async def user_identity(request: Request) -> Identity:
    """FastAPI dependency: a signed-in user (bearer token)."""
    auth: Authenticator = request.app.state.authenticator
    return await auth.identify(request)


async def user_or_device_identity(request: Request) -> Identity:
    """FastAPI dependency: a signed-in user, or a device by its X-Device-Key."""
    auth: Authenticator = request.app.state.authenticator
    return await auth.identify(request, allow_device=True)


async def admin_identity(request: Request) -> Identity:
    identity = await user_identity(request)
    if not identity.is_admin:
        raise forbidden("admins only")
    return identity


async def authorized(request: Request, identity: Identity = Depends(user_identity)) -> Caller:
    """FastAPI dependency: the signed-in caller, held to the rule `core.authz.ROUTES` gives
    this route (an admin-only route refuses everyone else here; a household's things are
    checked by the route with `Caller.check` once it knows their household)."""
    rule = route_rule(request)
    if rule.need is Need.ADMIN and not identity.is_admin:
        raise forbidden("admins only")
    if rule.need is Need.SESSION and identity.token_id is not None:
        raise forbidden("a personal access token cannot do this: sign in with your password")
    return Caller(identity, rule.action or Action.READ)


def shutting_down(request: Request) -> asyncio.Event:
    """Set when the server begins to stop: long-lived streams end on it, so a stop never waits
    for a client to hang up."""
    event: asyncio.Event = request.app.state.shutting_down
    return event


def json_response(value: Any, status_code: int = 200) -> Response:
    """`value` (plain dicts, lists, strings, numbers) as a JSON response, encoded by orjson in
    one call. A route that returns its dict has FastAPI walk it with `jsonable_encoder` first,
    which took a year by day (365 items) about ten times as long as building the items; a
    route that returns this keeps its documented schema with `response_model`."""
    return Response(orjson.dumps(value), status_code, media_type="application/json")


# -- the OpenAPI document ------------------------------------------------------------------------

_WHY = {
    400: "the body is not JSON",
    401: "no valid credentials",
    403: "the credentials may not do this",
    404: "no such thing visible to the caller",
    409: "conflicts with what is stored",
    410: "it existed but is no longer valid",
    413: "the body is over its limit",
    422: "invalid input; `details` names each bad field",
    429: "rate limited; Retry-After says when to come back",
    503: "a service or a store it needs is unavailable; retry later",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route's own error statuses (those no dependency implies: a 409 of its
    store, a 401 of a login); `document_errors` gives them the error body."""
    return {status: {"description": _WHY[status]} for status in statuses}


def _dependants(dependant: Any) -> Iterator[Any]:
    """A route's dependant and, depth first, those of its dependencies."""
    yield dependant
    for dependency in dependant.dependencies:
        yield from _dependants(dependency)


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """The API routes among `routes`, and those of the routers included in them (FastAPI keeps
    an included router as one entry, `original_router`, not as copies of its routes)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


def _named(dependants: Iterable[Any]) -> Iterator[str]:
    """The names a request gives: path and query parameters, and the fields of a JSON body (a
    body's `household_id` names a household as a query's would, and can be a 404 alike)."""
    for d in dependants:
        for p in (*d.path_params, *d.query_params):
            yield p.name
        for p in d.body_params:
            yield p.name
            yield from getattr(p.field_info.annotation, "model_fields", {})


def document_errors(schema: dict[str, Any], routes: Iterable[Any], prefix: str) -> None:
    """Lists on each operation every error status it can answer, with the error body: 422 and
    429 everywhere (bad query, rate limits), 503 (a service or store away), 413 wherever a body
    is read, 401 and 403 behind a sign-in, 404 where a parameter or a body field names a thing,
    and the route's own.
    `routes` are the services' own, mounted under `prefix`."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    signed_in = {user_identity, user_or_device_identity, admin_identity, authorized}
    for route in _api_routes(routes):
        statuses = {422, 429, 503}
        dependants = list(_dependants(route.dependant))
        if signed_in.intersection(d.call for d in dependants):
            statuses |= {401, 403}
        if any(name.endswith("_id") for name in _named(dependants)):
            statuses.add(404)
        for method in route.methods or ():
            operation = schema["paths"][prefix + route.path_format][method.lower()]
            own = statuses | ({413} if method not in ("GET", "HEAD") else set())
            responses = operation.setdefault("responses", {})
            for status in sorted(own | {int(s) for s in responses if s[0] in "45"}):
                responses[str(status)] = {
                    "description": responses.get(str(status), {}).get("description")
                    or _WHY[status],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(unused, None)
