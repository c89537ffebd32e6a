"""What every service accepts from a client, bounded before any route sees it.

A request body is refused with 413 once it passes its path's limit, before more of it is read
(a 300 MB registration body once grew the process to 1 GB before its 422). A JSON body is refused
with 422 naming the field when it holds what no store can keep or no parser should walk: a
non-finite number (`NaN`, `Infinity`, `1e400`), an integer beyond 64 bits, a NUL character (a
500 on PostgreSQL), or nesting deeper than `MAX_JSON_DEPTH` (the standard parser's recursion
ends in an error, not a 422). Query integers that reach a store are bounded to 64 bits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from fastapi import Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_BODY_BYTES = 64 * 1024
READINGS_BODY_BYTES = 16 * 1024 * 1024
"""`POST /api/v1/readings` takes up to 10,000 readings in a body; every other route 64 KiB."""
LARGER_BODIES = {"/api/v1/readings": READINGS_BODY_BYTES}
# Bodies parsed by their route in one pass of their own (the readings hot path): finite numbers
# and ranges are checked by its models, so the generic walk below is skipped there.
SELF_CHECKED = frozenset(LARGER_BODIES)
MAX_JSON_DEPTH = 32
INT64_MAX = 2**63 - 1

Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
"""A list offset: any larger one would only page past every row, or overflow a store's integer."""


TASMOTA_META_KEY = "tasmota_topic"
"""The device metadata key naming the Tasmota topic whose telemetry is that device's: the MQTT
ingester finds the device by it, so one value belongs to one device (a second claim is a 409,
or it could take or block another home's readings)."""


class BodyTooLarge(Exception):
    pass


class _Bad:
    """Stands in for a value the standard parser read but no store may keep."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _constant(name: str) -> _Bad:
    return _Bad(f"{name} is not a number JSON allows")


def _integer(text: str) -> int | _Bad:
    value = int(text)
    return value if -INT64_MAX - 1 <= value <= INT64_MAX else _Bad("integer beyond 64 bits")


def _real(text: str) -> float | _Bad:
    value = float(text)
    return value if math.isfinite(value) else _Bad("number too large for a double")


def _problems(value: Any, path: tuple[str, ...], depth: int) -> Iterator[tuple[str, str]]:
    if depth > MAX_JSON_DEPTH:
        yield ".".join(path) or "body", f"nested deeper than {MAX_JSON_DEPTH} levels"
        return
    if isinstance(value, _Bad):
        yield ".".join(path), value.why
    elif isinstance(value, str):
        if "\x00" in value:
            yield ".".join(path) or "body", "must not contain NUL characters"
    elif isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                yield ".".join(path) or "body", "a key contains a NUL character"
            yield from _problems(v, (*path, k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _problems(v, (*path, str(i)), depth + 1)


def json_problems(body: bytes) -> list[dict[str, str]]:
    """What is wrong with a JSON body, as `{"field", "message"}` items; [] when it is fine.

    The standard parser reads it (as the routes will), with hooks that mark what no store can
    keep, so each problem is named by its field rather than by a character offset.
    """
    try:
        value = json.loads(body, parse_constant=_constant, parse_int=_integer, parse_float=_real)
    except RecursionError:
        return [{"field": "body", "message": f"nested deeper than {MAX_JSON_DEPTH} levels"}]
    except (ValueError, UnicodeDecodeError) as exc:
        return [{"field": "body", "message": f"not valid JSON: {exc}"}]
    return [{"field": f, "message": m} for f, m in _problems(value, (), 0)][:20]


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return bool(kind == b"application/json" or kind.endswith(b"+json"))
    return True  # FastAPI reads a body without a content type as JSON


class BodyGuard:
    """Reads each request body up to its limit (413 past it, from the declared length when there
    is one, before anything is read) and refuses a JSON body with what `json_problems` finds
    (422); then replays the body to the app. Pure ASGI, outermost but for request ids."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = LARGER_BODIES.get(path, DEFAULT_BODY_BYTES)
        try:
            body = await _read(scope, receive, limit)
        except BodyTooLarge:
            await _answer(send, 413, "payload_too_large", f"body over {limit} bytes", None)
            return
        if body and path not in SELF_CHECKED and _is_json(scope):
            problems = json_problems(body)
            if problems:
                fields = ", ".join(p["field"] for p in problems[:5])
                await _answer(send, 422, "invalid", f"invalid request: {fields}", problems)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(send: Send, status: int, code: str, message: str, details: Any) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
