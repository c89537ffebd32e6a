"""The alerts service's parts, put together for the composition root to run and the routes to
use: the evaluator's consume loops, its periodic check and the notification dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.bus.runner import ConsumeLoop
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.failures import is_transient
from energy_tracker.core.loops import PruneTask, Stopper
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.core.urls import SmtpServer
from energy_tracker.services.alerts.consumer import AlertEvaluator
from energy_tracker.services.alerts.notify import Dispatcher
from energy_tracker.services.alerts.store import AlertStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
"""The shortest time from one check to the next that a change (`PeriodicCheck.wake`) asks for:
while observations stream in, the check runs at most this often."""
MAX_PAUSE_S = 60.0
"""The longest sleep of the check: what no wake announces (a device enabled by another process,
a wall clock set forward) waits at most this long."""


def pause_s(
    due_ms: int,
    now_ms: float,
    interval_s: float = CHECK_INTERVAL_S,
    max_pause_s: float = MAX_PAUSE_S,
) -> float:
    """How long the check sleeps after a look at `now_ms` that named `due_ms` as the next
    instant: until then, at most `max_pause_s`; `interval_s` when that is already past (a failing
    publish, a state stuck past its period), as a plain periodic check would."""
    pause = (due_ms - now_ms) / 1000
    return min(pause, max_pause_s) if pause > 0 else interval_s


PRUNE_EVERY_S = 3600.0


class PeriodicCheck:
    """Runs `AlertEvaluator.check` whenever time alone can trigger something: at the instant the
    last check named, soon after a change it may have missed (`wake`), and at least every
    MAX_PAUSE_S. With nothing arriving and nothing due, it sleeps."""

    def __init__(
        self,
        evaluator: AlertEvaluator,
        interval_s: float = CHECK_INTERVAL_S,
        max_pause_s: float = MAX_PAUSE_S,
    ) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self.max_pause_s = max_pause_s
        self._stopper = Stopper()
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """Something changed that may bring the next check closer: check again within
        `interval_s` of the last one."""
        self._changed.set()

    async def run(self) -> None:
        """Check, then sleep as `pause_s` says or until woken, until stopped; a failed check is
        logged and retried after `interval_s`."""
        loop = asyncio.get_running_loop()
        while not self._stopper.stopped:
            began = loop.time()
            self._changed.clear()
            try:
                due_ms = await self.evaluator.check()
                now_ms = self.evaluator.clock() * 1000
                pause = pause_s(due_ms, now_ms, self.interval_s, self.max_pause_s)
            except Exception as exc:
                if is_transient(exc):
                    log.info("periodic alert check skipped: %s", exc)
                else:
                    log.error("periodic alert check failed; trying again", exc_info=exc)
                pause = self.interval_s
            until = loop.time() + pause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), pause)
                # Woken by a change (or a stop): check again, but not more often than every
                # interval, nor later than planned.
                await self._stopper.sleep(min(began + self.interval_s, until) - loop.time())

    def stop(self) -> None:
        """End `run` at its next wait."""
        self._stopper.stop()
        self._changed.set()


class HistoryPruner(PruneTask):
    """Deletes alerts resolved more than `history_days` ago, with their transitions and
    notifications (AlertLog.prune_resolved says what is never deleted)."""

    what = "resolved alert(s) past ET_ALERT_HISTORY_DAYS"

    def __init__(self, store: AlertStore, history_days: int, every_s: float = PRUNE_EVERY_S):
        super().__init__(every_s)
        self.store = store
        self.keep = timedelta(days=history_days)

    async def prune_at(self, now_ms: int) -> int:
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        return await self.store.alerts.prune_resolved(now - self.keep)


class AlertService:
    """The alerts service's parts, for the composition root to run and the routes to use."""

    def __init__(
        self,
        bus: EventBus,
        store: AlertStore,
        directory: DeviceDirectory,
        *,
        max_gap_ms: int,
        smtp: SmtpServer | None,
        deny_private: bool,
        history_days: int,
        series: SeriesStore | None = None,
    ) -> None:
        self.store = store
        self.deny_private = deny_private
        self.dispatcher = Dispatcher(store.deliveries, smtp=smtp, deny_private=deny_private)
        self.evaluator = AlertEvaluator(
            bus,
            store,
            directory,
            max_gap_ms=max_gap_ms,
            on_deliveries=self.dispatcher.wake,
            series=series,
        )
        self.check = PeriodicCheck(self.evaluator)
        self.evaluator.on_change = self.check.wake
        self.pruner = HistoryPruner(store, history_days)

    def loops(self) -> list[ConsumeLoop]:
        """The consume loops of group `alerts`."""
        return self.evaluator.loops()

    def workers(self) -> dict[str, PeriodicCheck | Dispatcher | HistoryPruner]:
        """The other background loops, by name; each has run() and stop()."""
        return {
            "alerts:check": self.check,
            "alerts:dispatcher": self.dispatcher,
            "alerts:pruning": self.pruner,
        }
