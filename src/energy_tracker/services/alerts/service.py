"""The alerts service's parts, put together for the composition root to run and the routes to
use: the evaluator's consume loops, its periodic check and the notification dispatcher."""

from __future__ import annotations

import logging

from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.bus.runner import ConsumeLoop
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.failures import is_transient
from energy_tracker.core.loops import Stopper, every
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.core.urls import SmtpServer
from energy_tracker.services.alerts.consumer import AlertEvaluator
from energy_tracker.services.alerts.notify import Dispatcher
from energy_tracker.services.alerts.store import AlertStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class PeriodicCheck:
    """Runs `AlertEvaluator.check` every CHECK_INTERVAL_S until stopped."""

    def __init__(self, evaluator: AlertEvaluator, interval_s: float = CHECK_INTERVAL_S) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self._stopper = Stopper()

    async def run(self) -> None:
        """Check, then wait a while, until stopped; a failed check is logged and retried."""

        def failed(exc: Exception) -> None:
            if is_transient(exc):
                log.info("periodic alert check skipped: %s", exc)
            else:
                log.error("periodic alert check failed; trying again", exc_info=exc)

        await every(self.interval_s, self._stopper, self.evaluator.check, failed)

    def stop(self) -> None:
        """End `run` at its next wait."""
        self._stopper.stop()


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

    def loops(self) -> list[ConsumeLoop]:
        """The consume loops of group `alerts`."""
        return self.evaluator.loops()

    def workers(self) -> dict[str, PeriodicCheck | Dispatcher]:
        """The other background loops, by name; each has run() and stop()."""
        return {"alerts:check": self.check, "alerts:dispatcher": self.dispatcher}
