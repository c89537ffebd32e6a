"""Server-Sent Events streams: the framing, the keep-alive, and the one polling loop behind
every stream (live readings, alert transitions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi.responses import StreamingResponse

T = TypeVar("T")

KEEP_ALIVE = b": keep-alive\n\n"


def sse_frame(event_id: str | int, event: str, data: bytes) -> bytes:
    """One event: its id (sent back as Last-Event-ID on reconnection), type and JSON data."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(event_id).encode(), event.encode(), data)


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A text/event-stream response that proxies neither cache nor buffer."""
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def polled_events(
    opening: bytes,
    poll: Callable[[], Awaitable[tuple[list[bytes], bool]]],
    wait: Callable[[], Awaitable[object]],
    stopped: Callable[[], Awaitable[bool]],
    keep_alive_s: float,
) -> AsyncIterator[bytes]:
    """`opening`, then what each `poll` returns (frames, and whether more are ready at once),
    with a comment line after `keep_alive_s` of silence so proxies keep the connection; between
    polls, `wait`. Ends when `stopped` says so."""
    yield opening
    quiet_since = time.monotonic()
    while not await stopped():
        frames, more = await _uncancelled(poll())
        for frame in frames:
            yield frame
        now = time.monotonic()
        if frames:
            quiet_since = now
            if more:
                continue
        elif now - quiet_since >= keep_alive_s:
            yield KEEP_ALIVE
            quiet_since = now
        await wait()


async def _uncancelled(query: Awaitable[T]) -> T:
    """Await a store query that a client's going away must not cut half way: SQLAlchemy's
    aiosqlite connection cancelled mid-query is closed by a task that never ends (one pending
    task and one thread per dropped stream). The query finishes; its answer is dropped."""
    task = asyncio.ensure_future(query)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)
