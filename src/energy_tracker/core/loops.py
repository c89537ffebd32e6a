"""Background loops' shared parts: the stop signal with its interruptible waits, the growing
pause between retries, and the run-every-interval loop, so that each worker (consume loops, the
MQTT subscriber, the pruners, the alert check, the dispatcher) stops and backs off the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Stopper:
    """A background loop's stop signal, and the waits that end as soon as it is given."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to stop at its next check or wait."""
        self._event.set()

    @property
    def stopped(self) -> bool:
        """Whether `stop` was called."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Until `stop` is called."""
        await self._event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when stopped meanwhile; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()


class Backoff:
    """Pauses between retries that double from `first_s` up to `max_s`, until `reset`."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next_s = first_s

    def next(self) -> float:
        """The pause before this retry; the one after will be twice as long (up to max_s)."""
        pause = self._next_s
        self._next_s = min(pause * 2, self.max_s)
        return pause

    def reset(self) -> None:
        """After a success: the next failure waits `first_s` again."""
        self._next_s = self.first_s


async def every(
    interval_s: float,
    stopper: Stopper,
    step: Callable[[], Awaitable[object]],
    on_error: Callable[[Exception], None],
) -> None:
    """Run `step` now and then every `interval_s` until stopped; a failed step goes to
    `on_error`, and the next round comes as usual."""
    while not stopper.stopped:
        try:
            await step()
        except Exception as exc:
            on_error(exc)
        await stopper.sleep(interval_s)


class PruneTask:
    """A background pruner: one pass now and then every `every_s`, deleting what is past its
    keep (`prune_at`); a pass that fails (a store away) is logged and the next round retries.
    Each kind of record that grows without bound has one subclass, in the service that owns it.
    """

    what = "record(s)"
    """What is deleted, for the log line."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stopper = Stopper()

    async def prune_at(self, now_ms: int) -> int:
        """Delete what is past its keep at `now_ms`; how many."""
        raise NotImplementedError

    async def prune(self, now_ms: int | None = None) -> int:
        """One pass (at `now_ms`, default now); how many were deleted."""
        deleted = await self.prune_at(int(time.time() * 1000) if now_ms is None else now_ms)
        if deleted:
            log.info("pruning: deleted %d %s", deleted, self.what)
        return deleted

    async def run(self) -> None:
        """Prune now and every `every_s` until stopped."""

        def failed(exc: Exception) -> None:
            log.warning("pruning %s failed (%s); retrying later", self.what, exc)

        await every(self.every_s, self._stopper, self.prune, failed)

    def stop(self) -> None:
        """End `run` at its next wait."""
        self._stopper.stop()
