"""Group commit's promises, with a write that records what it is given (the adapters' real
writes are in tests/contract/test_bus.py): publishes made while a write is in flight go out
together in the next one, in call order; a failed write fails each of its callers, and only
them."""

from __future__ import annotations

import asyncio

import pytest

from energy_tracker.core.bus.group_commit import GroupCommit


class Log:
    """A write that takes a while and can be told to fail its next round."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, list[tuple[bytes, bytes]]]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def write(self, batch: dict[str, list[tuple[bytes, bytes]]]) -> None:
        self.rounds.append(batch)
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("disk gone")


def rec(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"dev", str(n).encode())]


async def test_an_idle_publish_is_written_at_once_and_alone() -> None:
    log = Log()
    log.release.set()
    await GroupCommit(log.write).publish("t", rec(1))
    assert log.rounds == [{"t": rec(1)}]


async def test_publishes_during_a_write_share_the_next_one_in_call_order() -> None:
    log = Log()
    group = GroupCommit(log.write)
    first = asyncio.create_task(group.publish("t", rec(0)))
    await asyncio.sleep(0)  # the first write is now in flight
    rest = [asyncio.create_task(group.publish("t", rec(n))) for n in range(1, 6)]
    other = asyncio.create_task(group.publish("u", rec(9)))
    await asyncio.sleep(0)
    log.release.set()
    await asyncio.gather(first, *rest, other)
    assert log.rounds == [
        {"t": rec(0)},
        {"t": [r for n in range(1, 6) for r in rec(n)], "u": rec(9)},
    ]


async def test_a_failed_write_fails_its_callers_only() -> None:
    log = Log()
    group = GroupCommit(log.write)
    log.fail_next = True
    doomed = [asyncio.create_task(group.publish("t", rec(n))) for n in range(3)]
    await asyncio.sleep(0)
    log.release.set()
    for task in doomed:
        with pytest.raises(ConnectionError):
            await task
    await group.publish("t", rec(7))
    assert log.rounds[-1] == {"t": rec(7)}
