"""Live readings of one device as Server-Sent Events (`GET /devices/{id}/live`).

A stream reads the time-series store, not the bus. Every usage process shares the store, while
only the process owning a device's partition sees that device's messages (and a private consumer
group per stream would have to read each topic from its start), so the store is what is correct
both with every service in one process and with usage replicas. Each stream asks the store for
readings newer than the last it sent once a second, or at once when this process's consumer says
it has just stored readings of the device; in `up`, the stream is as fast as the consumer.

A reading stored late, with a time older than the last one sent, is not streamed: the stream is
the device's newest readings; `/readings` and the buckets hold everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import orjson

from energy_tracker.core.events import Reading
from energy_tracker.core.sse import polled_events, sse_frame
from energy_tracker.core.stores.timeseries.base import SeriesStore

POLL_S = 1.0
HEARTBEAT_S = 15.0
PAGE = 1000
_END_OF_TIME = 2**62


class StoredReadings:
    """Tells this process's live streams that the consumer stored new readings of a device."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            for event in self._waiters.get(device_id, ()):
                event.set()

    @contextlib.contextmanager
    def watch(self, device_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever readings of `device_id` are stored, while the block runs."""
        event = asyncio.Event()
        self._waiters[device_id].add(event)
        try:
            yield event
        finally:
            self._waiters[device_id].discard(event)
            if not self._waiters[device_id]:
                del self._waiters[device_id]


async def reading_events(
    store: SeriesStore,
    feed: StoredReadings,
    device_id: str,
    after_ts: int | None,
    item: Callable[[Reading], dict[str, Any]],
    stopping: asyncio.Event,
    gone: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncIterator[bytes]:
    """SSE frames: the readings after `after_ts` (without it: the latest one, then every new
    one), each with its ts as the event id so a client reconnects with Last-Event-ID; a comment
    line after `heartbeat_s` of silence keeps proxies from closing the connection. Ends when
    the server stops or `gone()` says the caller may no longer be served."""
    with feed.watch(device_id) as stored:
        if after_ts is None:
            latest = await store.readings_around(device_id, _END_OF_TIME, _END_OF_TIME)
            after_ts = latest[-1].ts - 1 if latest else -1
        last = after_ts

        async def poll() -> tuple[list[bytes], bool]:
            nonlocal last
            stored.clear()  # before the query, so a store during the query still wakes us
            rows = await store.readings_page(device_id, 0, _END_OF_TIME, last, PAGE)
            if rows:
                last = rows[-1].ts
            frames = [sse_frame(r.ts, "reading", orjson.dumps(item(r))) for r in rows]
            return frames, len(rows) == PAGE

        async def wait() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), poll_s)

        async def stopped() -> bool:
            return stopping.is_set() or await gone()

        async for frame in polled_events(b": connected\n\n", poll, wait, stopped, heartbeat_s):
            yield frame
