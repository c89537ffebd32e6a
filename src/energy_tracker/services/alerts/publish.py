"""The alert-events outbox, sending side: transitions go on the topic right after the commit
that recorded them and are marked; any left unmarked (the process died in between, or the bus
was away) are published by the periodic check, so a consumer of `alert-events` may see one
twice and deduplicates on its `id`."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.events import ALERT_EVENTS, alert_transitioned
from energy_tracker.services.alerts.lifecycle import Transition
from energy_tracker.services.alerts.store.transitions import TransitionOutbox

log = logging.getLogger(__name__)

# How long a transition may stay unpublished before the periodic check publishes it: long
# enough that the consumer that wrote it has normally done so itself.
PUBLISH_GRACE = timedelta(seconds=5)
PAGE = 500


class TransitionPublisher:
    """Puts recorded transitions on `alert-events` and marks them published."""

    def __init__(self, bus: EventBus, outbox: TransitionOutbox) -> None:
        self.bus = bus
        self.outbox = outbox
        # Transitions recorded up to this instant may be left unpublished (a failed publish
        # here, or before the first check a run that died): the check looks again once they
        # are past the grace. None when it need not.
        self.unsure_until: datetime | None = None
        self._looked = False

    async def publish(self, transitions: Collection[Transition]) -> None:
        """Put transitions on `alert-events` and mark them; on failure they stay unmarked for
        the periodic check to publish."""
        if not transitions:
            return
        try:
            await self.bus.publish(
                ALERT_EVENTS, [alert_transitioned(t.owner_id, t.payload) for t in transitions]
            )
            await self.outbox.mark_published([t.id for t in transitions])
        except Exception as exc:
            log.warning(
                "publishing %d alert transition(s) failed (%s); will retry", len(transitions), exc
            )
            self._unsure(max(t.recorded_at for t in transitions))

    def _unsure(self, until: datetime) -> None:
        if self.unsure_until is None or self.unsure_until < until:
            self.unsure_until = until

    def leftovers_due(self) -> datetime | None:
        """When `publish_leftovers` must run again (None: only when the clock says otherwise)."""
        return None if self.unsure_until is None else self.unsure_until + PUBLISH_GRACE

    async def publish_leftovers(self, now: datetime) -> None:
        """Publish transitions whose writer died (or whose bus was away) before it could."""
        if not self._looked:
            self._looked = True
            self._unsure(now)  # a run that died just before this one started may have left some
        before = now - PUBLISH_GRACE
        while rows := await self.outbox.unpublished(before, PAGE):
            await self.bus.publish(
                ALERT_EVENTS, [alert_transitioned(owner, payload) for _, owner, payload in rows]
            )
            await self.outbox.mark_published([tid for tid, _, _ in rows])
            if len(rows) < PAGE:
                break
        if self.unsure_until is not None and self.unsure_until <= before:
            self.unsure_until = None
