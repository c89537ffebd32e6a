"""The notification dispatcher while its database restarts (alerts/notify.py): it waits, saying
so in a warning line, not an ERROR with a traceback at every poll, and it works again once the
database is back. Found by the fault suite (tests/chaos), whose MariaDB outages filled
the alerts log with tracebacks. The database is a private PostgreSQL this test kills itself."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.alerts.notify import Dispatcher
from energy_tracker.services.alerts.store import AlertStore
from tests.private_servers import private_postgres


@pytest.mark.postgres
async def test_the_dispatcher_waits_out_its_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with private_postgres(tmp_path) as server:
        db = Database(server.url)
        await db.start()
        try:
            await db.migrate()
            dispatcher = Dispatcher(
                AlertStore(db).deliveries, smtp=None, deny_private=False, poll_s=0.1
            )
            task = asyncio.create_task(dispatcher.run())
            try:
                with caplog.at_level(logging.WARNING, "energy_tracker.services.alerts.notify"):
                    await asyncio.to_thread(server.kill)
                    deadline = time.monotonic() + 60
                    while not caplog.records:
                        assert time.monotonic() < deadline, "the dispatcher said nothing"
                        await asyncio.sleep(0.1)
                    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
                    assert all(level == "WARNING" and exc is None for level, _, exc in said), said
                    assert "the database is away" in said[0][1]
                    assert not task.done()
                    await asyncio.to_thread(server.start)
                    caplog.clear()
                    # Back: a round that finds nothing due says nothing.
                    deadline = time.monotonic() + 60
                    while await _rounds_fail(dispatcher):
                        assert time.monotonic() < deadline, "the dispatcher never recovered"
                        await asyncio.sleep(0.2)
            finally:
                dispatcher.stop()
                await task
        finally:
            await db.stop()


async def _rounds_fail(dispatcher: Dispatcher) -> bool:
    try:
        await dispatcher.dispatch_due()
    except Exception:
        return True
    return False
