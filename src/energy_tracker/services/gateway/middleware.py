"""What the gateway does to every /api/v1 request before any service sees it: rate limits, CORS.

Rate limiting is pure ASGI, as it sits on the ingestion hot path: per request it reads the
headers once, verifies a bearer token's signature or a personal access token's tag (no database),
and makes one bucket hit.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from energy_tracker.config import Settings
from energy_tracker.core.auth import normalize_email, secret_digest, token_principal
from energy_tracker.core.rate_limits import Rate, RateLimits
from energy_tracker.services.gateway.ratelimit import Decision, RateLimiter
from energy_tracker.services.gateway.routes import API_PREFIX

LOGIN_PATH = API_PREFIX + "/auth/login"
READINGS_PATH = API_PREFIX + "/readings"  # the one route that verifies device keys
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def install_gateway_middleware(app: FastAPI, settings: Settings) -> None:
    """Rate limits (unless ET_RATE_LIMITS=off) and CORS (when ET_CORS_ORIGINS names origins).

    CORS goes outside the limits, so a browser can read a 429 and preflights cost no tokens.
    The limiter itself is started with the runtime and found on `app.state.limiter`.
    """
    if settings.rate_limits is not None:
        app.add_middleware(
            RateLimitMiddleware, limits=settings.rate_limits, issuer=settings.jwt_issuer
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-device-key", "x-request-id"],
            expose_headers=["x-request-id", "retry-after", *RATE_LIMIT_HEADERS],
            max_age=600,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Whose bucket a request is charged to."""

    key: str
    rate: Rate
    device_digest: str | None = None  # of the X-Device-Key, learnt or forgotten by the answer


class RateLimitMiddleware:
    """Charges each /api/v1 request to its principal's bucket; 429 when the bucket is empty.

    The principal is the user of a session's bearer token whose signature verifies, or the
    personal access token (each its own bucket, so a script that runs wild spends its own
    budget, not its owner's dashboard's) whose tag verifies, else the device of an
    X-Device-Key that has been seen to work, else the client IP. A device key earns a bucket of
    its own only once readings sent with it were accepted (other routes do not check device
    keys), so made-up keys cannot each claim a fresh bucket: until then they count against the
    IP, and a 401 takes the bucket away again (a rotated key). Logins are limited on top, per
    account and per IP, by failures: each attempt takes a token from both, a success gives it
    back.
    """

    def __init__(
        self, app: ASGIApp, limits: RateLimits, issuer: str, known_devices: int = 100_000
    ) -> None:
        self.app = app
        self.limits = limits
        self.issuer = issuer
        self._known: OrderedDict[str, None] = OrderedDict()  # device key digests that worked
        self._known_max = known_devices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        limiter: RateLimiter = state.limiter
        principal = self._principal(scope, state.secret)
        decision = await limiter.hit(principal.key, principal.rate)
        if not decision.allowed:
            await _refuse(send, decision, principal.key.partition(":")[0])
            return
        login_keys: list[str] = []
        if scope["method"] == "POST" and scope["path"] == LOGIN_PATH:
            receive, email = await _login_email(receive)
            login_keys = [f"login-ip:{_client_ip(scope)}"]
            if email:
                login_keys.append(f"login-account:{secret_digest(email)}")
            for key in login_keys:
                login = await limiter.hit(key, self.limits.login)
                if not login.allowed:
                    await _refuse(send, login, "failed logins")
                    return
                decision = min(decision, login, key=lambda d: d.remaining)

        status = 500

        async def send_with_limits(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *_limit_headers(decision)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            if principal.device_digest is not None:
                if status == 401:
                    self._known.pop(principal.device_digest, None)
                elif status < 300 and scope["path"] == READINGS_PATH:
                    self._learn(principal.device_digest)
            if status != 401:
                for key in login_keys:
                    await limiter.hit(key, self.limits.login, cost=-1)

    def _principal(self, scope: Scope, secret: str) -> Principal:
        authorization = device_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-device-key":
                device_key = value
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                whose = token_principal(token.strip(), secret=secret, issuer=self.issuer)
                if whose is not None:
                    return Principal(whose, self.limits.user)
        elif device_key:
            digest = secret_digest(device_key.decode("latin-1"))
            if digest in self._known:
                return Principal(f"device:{digest}", self.limits.device, digest)
            return Principal(f"ip:{_client_ip(scope)}", self.limits.anonymous, digest)
        return Principal(f"ip:{_client_ip(scope)}", self.limits.anonymous)

    def _learn(self, digest: str) -> None:
        """Remember a key that worked, most recently used last, within a bounded table."""
        self._known[digest] = None
        self._known.move_to_end(digest)
        if len(self._known) > self._known_max:
            self._known.popitem(last=False)


def _client_ip(scope: Scope) -> str:
    """The client's IPv4 address, or its IPv6 /64 network: one host holds a whole /64, so a
    bucket per IPv6 address would be a fresh bucket per request."""
    client = scope.get("client")
    if not client:
        return "unknown"
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    values = (decision.limit, decision.remaining, math.ceil(decision.reset_s))
    return [
        (n.lower().encode(), str(v).encode())
        for n, v in zip(RATE_LIMIT_HEADERS, values, strict=True)
    ]


async def _refuse(send: Send, decision: Decision, whose: str) -> None:
    """429 with the JSON error body of every other error, Retry-After and X-RateLimit-*."""
    retry_after = max(1, math.ceil(decision.retry_after_s))
    body = orjson.dumps(
        {
            "error": {
                "code": "rate_limited",
                "message": f"too many requests ({whose}): retry in {retry_after} s",
                "details": {"limit": decision.limit, "retry_after_s": retry_after},
            }
        }
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
        *_limit_headers(decision),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _login_email(receive: Receive) -> tuple[Receive, str | None]:
    """Read a login body to find its account, and a `receive` that replays it to the route.

    The body is whole and bounded here (`BodyGuard` sits outside), so however it is padded it
    names its account; an unreadable one names none, and the route then refuses it anyway.
    """
    consumed: list[Message] = []
    complete = False
    while True:
        message = await receive()
        consumed.append(message)
        if message["type"] != "http.request":
            break
        if not message.get("more_body", False):
            complete = True
            break
    email = None
    if complete:
        try:
            body = orjson.loads(b"".join(m.get("body", b"") for m in consumed))
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("email"), str):
            email = normalize_email(body["email"])[:254] or None

    async def replay() -> Message:
        return consumed.pop(0) if consumed else await receive()

    return replay, email
