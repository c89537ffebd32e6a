"""Background loops' shared parts: the stop signal with its interruptible waits, the growing
pause between retries, and the run-every-interval loop, so that each worker (consume loops, the
MQTT subscriber, retention, the alert check, the dispatcher) stops and backs off the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


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
