"""Group commit: the publishes of many concurrent callers written as one, durably, in order.

Why: devices send one reading per request. Written one request at a time, every reading pays a
whole durable write (a SQLite transaction, a Kafka produce round trip with acks=all), and the
writes queue behind each other. Here a single writer per bus takes everything published while
its previous write was in flight and writes it as one batch; each caller returns when the write
holding its records is durable, or raises what that write raised. So the acknowledgement still
means durable, and under load one write carries many requests' records.

An idle caller is not delayed: when no write is in flight, its records are written at once.
Records keep the order of the `publish` calls (per topic), so a key's order holds whenever its
records are published one call after another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

Records = Sequence[tuple[bytes, bytes]]
Write = Callable[[dict[str, list[tuple[bytes, bytes]]]], Awaitable[None]]
"""Writes {topic: records} durably, all or (for one topic's records) none."""


class GroupCommit:
    """One writer that folds concurrent `publish` calls into one `write` call per round."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending: dict[str, list[tuple[bytes, bytes]]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def publish(self, topic: str, records: Records) -> None:
        """Returns once `records` are written durably; raises the write's error otherwise."""
        if not records:
            return
        self._pending.setdefault(topic, []).extend(records)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Seen even when the caller gave up on it, so a failed write is not reported twice.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._waiters.append(done)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_rounds(), name="bus-group-commit")
        # A caller that gives up (its client went away) does not cancel the write of the others.
        await asyncio.shield(done)

    async def _write_rounds(self) -> None:
        try:
            while self._waiters:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = {}, []
                try:
                    await self._write(batch)
                except Exception as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                else:
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
        finally:
            self._writer = None
            # Cancelled (the bus is stopping): nobody may wait for a write that never comes.
            for w in self._waiters:
                if not w.done():
                    w.set_exception(ConnectionError("the bus stopped before the write"))
            self._pending, self._waiters = {}, []

    async def flush(self) -> None:
        """Wait until everything published so far is written (or has failed)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)
