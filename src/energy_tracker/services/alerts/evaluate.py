"""One evaluation: the tasks an input built, judged by the rules' state machine (rules.py,
lifecycle.py) against the stored states, and written in one transaction (store/evaluation.py).

Ids are derived from what happened, and a state remembers the newest instant it saw, so a batch
delivered again after a crash finds its work done: no second alert, no second notification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Histogram

from energy_tracker.core.failures import TransientError, is_transient
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.services.alerts.lifecycle import Transition, apply_steps
from energy_tracker.services.alerts.models import alert_id
from energy_tracker.services.alerts.observations import TaskSource
from energy_tracker.services.alerts.rules import EvalState, rising_due, run
from energy_tracker.services.alerts.store.evaluation import EvaluationStore

TRANSITIONS = Counter("et_alert_transitions_total", "Alert transitions recorded", ["state"])
EVALUATION_LAG = Histogram(
    "et_alert_evaluation_lag_seconds",
    "From a reading's timestamp to the alert transition it caused (power rules)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


@dataclass
class Evaluated:
    """What one evaluation committed: the transitions to publish, and whether it wrote
    notifications for the dispatcher."""

    transitions: list[Transition] = field(default_factory=list)
    notify: bool = False
    due: int | None = None  # the first instant the clock alone changes a judged silence

    def due_at(self, at: int | None) -> None:
        """Keep `at` if it is the earliest instant yet."""
        if at is not None and (self.due is None or at < self.due):
            self.due = at


def _idle(state: EvalState) -> bool:
    return state.pending_since is None and state.firing_since is None


async def evaluate(store: EvaluationStore, source: TaskSource, now: datetime) -> Evaluated:
    """Evaluate the tasks `source` builds and write the outcomes in one transaction; a write
    that lost a race (or a database that is away) is a TransientError: the consume loop then
    retries the batch, which the new state makes safe."""
    done = Evaluated()
    try:
        async with store.begin() as ev:
            tasks = await source(ev)
            keys = [(t.rule.id, t.scope) for t in tasks]
            stored = await ev.states(keys)
            open_ids = {
                key: alert_id(key[0], key[1], s.state.firing_since)
                for key, s in stored.items()
                if s.state.firing_since is not None
            }
            open_alerts = await ev.alerts(set(open_ids.values()))
            mailing: dict[str, list[str]] = {}  # each household's, read once it is needed
            for t, key in zip(tasks, keys, strict=True):
                before = stored.get(key)
                if before is None and t.only_if_stored:
                    continue
                if before is not None and t.unless_firing and key in open_ids:
                    continue
                state = before.state if before is not None else EvalState()
                steps = run(t.rule.condition, state, t.samples)
                opened = open_alerts.get(open_ids[key]) if key in open_ids else None
                outcome = apply_steps(t.rule, t.scope, state, opened, steps, now)
                if t.silent_since is not None:
                    done.due_at(rising_due(t.rule.condition, outcome.state, t.silent_since))
                if outcome.transitions:
                    home = t.rule.household_id
                    if home not in mailing:
                        mailing[home] = await ev.email_recipients(home)
                    if mailing[home]:
                        outcome = apply_steps(
                            t.rule, t.scope, state, opened, steps, now, mailing[home]
                        )
                if not outcome.alerts and (
                    outcome.state == state or (_idle(state) and _idle(outcome.state))
                ):
                    continue  # nothing changed, or nothing pending or open: no write
                await ev.save(t.rule.id, t.scope, before, outcome, t.period_end)
                done.transitions += outcome.transitions
                done.notify = done.notify or bool(outcome.deliveries)
    except Exception as exc:
        if isinstance(exc, Conflict) or is_transient(exc):
            raise TransientError(f"alert evaluation not written: {exc}") from exc
        raise
    for event in done.transitions:
        TRANSITIONS.labels(event.state).inc()
        if event.payload["metric"] == "power_w":
            EVALUATION_LAG.observe(max(0.0, now.timestamp() - event.payload["at_ms"] / 1000))
    return done
