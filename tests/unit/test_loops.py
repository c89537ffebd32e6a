"""The background loops' shared parts: backoff, interruptible waits, run-every-interval."""

from __future__ import annotations

import asyncio

from energy_tracker.core.loops import Backoff, Stopper, every


def test_backoff_doubles_up_to_its_limit_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


async def test_a_stop_ends_a_wait_at_once() -> None:
    stopper = Stopper()
    assert await stopper.sleep(0.01) is False  # not stopped: the whole wait
    asyncio.get_running_loop().call_later(0.05, stopper.stop)
    # Ended by the stop, not the minute: otherwise wait_for gives up first.
    assert await asyncio.wait_for(stopper.sleep(60), 10) is True


async def test_every_runs_each_round_and_hands_failures_on() -> None:
    stopper = Stopper()
    rounds: list[int] = []
    failures: list[str] = []

    async def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("round two failed")
        if len(rounds) == 3:
            stopper.stop()

    await asyncio.wait_for(every(0.001, stopper, step, lambda exc: failures.append(str(exc))), 10)
    assert rounds == [0, 1, 2]
    assert failures == ["round two failed"]
