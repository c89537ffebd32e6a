"""Every store adapter, its server stopped in the middle of a run of batches: what it raises is
classified transient (`core.failures.is_transient`), so the consume loop waits the outage out
instead of dead-lettering the batch; once the server is back, the same adapter works again.

PostgreSQL and MariaDB are private instances this suite starts and kills itself; SQLite's
"server away" is another process holding the file's write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from energy_tracker.core.events import Reading
from energy_tracker.core.failures import is_transient
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.postgres import PostgresSeriesStore
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.users.store import UserStore
from tests.private_servers import private_mariadb, private_postgres

T0 = 1_767_225_600_000


def batch(i: int) -> list[Reading]:
    return [Reading("dev", T0 + i * 1000 + k, power_w=1.0) for k in range(1000)]


async def until_ok(call: Callable[[], Awaitable[object]], timeout_s: float = 60.0) -> None:
    """Retry `call` as the consume loop would, every failure meanwhile being transient."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call()
            return
        except Exception as exc:
            assert is_transient(exc), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            assert time.monotonic() < deadline, "the store did not come back"
            await asyncio.sleep(0.5)


async def failure_while(
    writes: Callable[[int], Awaitable[object]], kill: Callable[[], None]
) -> BaseException:
    """Write batch after batch; kill the server after the second; the error that stops them."""
    i = 0
    try:
        while True:
            await writes(i)
            i += 1
            if i == 2:
                await asyncio.to_thread(kill)
            assert i < 1000, "writes went on with the server dead"
    except AssertionError:
        raise
    except Exception as exc:
        return exc


@pytest.mark.postgres
async def test_postgres_series_store_waits_out_a_crash(tmp_path: Path) -> None:
    with private_postgres(tmp_path) as server:
        store = PostgresSeriesStore(server.url)
        await store.start()
        try:
            await store.migrate()
            exc = await failure_while(lambda i: store.add_readings(batch(i)), server.kill)
            assert is_transient(exc), f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(server.start)
            await until_ok(lambda: store.add_readings(batch(50)))
            assert len(await store.readings_page("dev", 0, 2**62, None, 10_000)) >= 3000
        finally:
            await store.stop()


@pytest.mark.postgres
async def test_postgres_metadata_store_waits_out_a_crash(tmp_path: Path) -> None:
    with private_postgres(tmp_path) as server:
        await metadata_waits_out_a_crash(server.url, server.kill, server.start)


@pytest.mark.mysql
async def test_mariadb_metadata_store_waits_out_a_crash(tmp_path: Path) -> None:
    with private_mariadb(tmp_path) as server:
        await metadata_waits_out_a_crash(server.url, server.kill, server.start)


async def metadata_waits_out_a_crash(
    url: str, kill: Callable[[], None], start: Callable[[], None]
) -> None:
    db = Database(url)
    await db.start()
    try:
        await db.migrate()
        users = UserStore(db)
        exc = await failure_while(lambda i: users.create(f"u{i}@example.com", "x", None), kill)
        assert is_transient(exc), f"{type(exc).__name__}: {exc}"
        await asyncio.to_thread(start)
        await until_ok(lambda: users.create("back@example.com", "x", None))
        assert await users.by_email("back@example.com") is not None
    finally:
        await db.stop()


async def test_sqlite_series_store_waits_out_a_held_lock(tmp_path: Path) -> None:
    store = SqliteSeriesStore(str(tmp_path / "series.db"))
    await store.start()
    try:
        await store.migrate()
        await store.add_readings(batch(0))
        other = sqlite3.connect(tmp_path / "series.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process writing for longer than busy_timeout
        try:
            with pytest.raises(Exception) as raised:
                await store.add_readings(batch(1))
            assert is_transient(raised.value), f"{type(raised.value).__name__}: {raised.value}"
        finally:
            other.execute("ROLLBACK")
            other.close()
        await until_ok(lambda: store.add_readings(batch(1)))
        assert len(await store.readings_page("dev", 0, 2**62, None, 10_000)) == 2000
    finally:
        await store.stop()


async def test_sqlite_metadata_store_waits_out_a_held_lock(tmp_path: Path) -> None:
    """SQLite's "database is locked" (another process writing for longer than the busy timeout)
    is an OperationalError like a poison one would be: it must be classified transient."""
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    await db.start()
    try:
        await db.migrate()
        users = UserStore(db)
        await users.create("before@example.com", "x", None)
        other = sqlite3.connect(tmp_path / "meta.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Exception) as raised:
                await users.create("during@example.com", "x", None)
            assert is_transient(raised.value), f"{type(raised.value).__name__}: {raised.value}"
        finally:
            other.execute("ROLLBACK")
            other.close()
        await until_ok(lambda: users.create("after@example.com", "x", None))
        assert await users.by_email("after@example.com") is not None
        assert await users.by_email("during@example.com") is None
    finally:
        await db.stop()
