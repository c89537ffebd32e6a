"""Shared fixtures: real backends (see tests/backends.py), a report of skipped legs, and the
check that no test leaves asyncio tasks or threads running behind it."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.backends import (  # noqa: F401 - fixtures
    SKIPPED_LEGS,
    metadata_db,
    metadata_db_url,
    mysql_url,
    postgres_url,
    redis_prefix,
    redis_url,
)
from tests.kafka_broker import kafka_url  # noqa: F401

# What a test's own clean-up may still be finishing when it returns: a task awaiting its
# cancellation, a thread joining. Anything alive after this is left behind.
SETTLE_S = 5.0
# Workers of an event loop's default executor (name look-ups, run_in_executor): the loop owns
# them and shuts them down when it closes, which pytest-asyncio does after these checks.
DEFAULT_EXECUTOR = re.compile(r"asyncio_\d+")


@pytest.fixture(autouse=True)
def no_threads_left_behind() -> Iterator[None]:
    """Fail a test that leaves a thread running it started (checked after every other
    fixture, the event loop included, has been torn down)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + SETTLE_S
    while left := [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not DEFAULT_EXECUTOR.fullmatch(t.name)
    ]:
        if time.monotonic() > deadline:
            pytest.fail(f"threads left running: {', '.join(t.name for t in left)}")
        time.sleep(0.02)


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", repr(coro))


@pytest.fixture
async def no_tasks_left_behind() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks pending on its event loop (checked after the
    test's other fixtures have been torn down); they are cancelled, so nothing runs on.
    Used by every async test (see below); a sync test has no loop of its own to leave tasks on,
    and one that drives a sync client with its own loop (Playwright) must not meet ours."""
    yield
    current = asyncio.current_task()
    deadline = time.monotonic() + SETTLE_S
    while left := [t for t in asyncio.all_tasks() if t is not current and not t.done()]:
        if time.monotonic() > deadline:
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            names = ", ".join(f"{t.get_name()} ({_coroutine_name(t)})" for t in left)
            pytest.fail(f"tasks left pending: {names}")
        await asyncio.sleep(0.02)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "no_tasks_left_behind")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPED_LEGS:
        terminalreporter.section("legs skipped (their servers are not running here)")
        for leg in sorted(SKIPPED_LEGS):
            terminalreporter.write_line(f"  {leg}")
