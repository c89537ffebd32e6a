"""From evaluation steps to what gets written: alert rows, transitions and notifications. Pure.

Every id is derived from what happened (rule, scope, instant, state, channel), never drawn at
random, so evaluating the same observations again yields the same rows: the database's unique
keys then make a redelivered message a no-op instead of a second alert or a second e-mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from energy_tracker.services.alerts.models import (
    ALL_DEVICES,
    Alert,
    AlertRule,
    Delivery,
    alert_id,
    delivery_id,
    ms_to_datetime,
    transition_id,
)
from energy_tracker.services.alerts.rules import Change, EvalState, Step

FIRING, RESOLVED, ACKNOWLEDGED = "firing", "resolved", "acknowledged"


def alert_view(alert: Alert, rule: AlertRule | None = None) -> dict[str, Any]:
    """The public JSON of an alert (API, webhook bodies); `rule` adds its name and metric."""
    out: dict[str, Any] = {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "user_id": alert.owner_id,
        "household_id": alert.household_id,
        "device_id": alert.device_id,
        "state": alert.state,
        "acknowledged": alert.acknowledged,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "severity": alert.severity,
        "value": alert.value,
        "peak_value": alert.peak_value,
        "threshold": alert.threshold,
        "started_at": _iso(alert.started_at),
        "resolved_at": _iso(alert.resolved_at),
        "last_seen_at": _iso(alert.last_seen_at),
    }
    if rule is not None:
        out["rule_name"] = rule.name
        out["metric"] = rule.metric
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Transition:
    """One alert transition: a row of the `alert-events` outbox and one message on the topic."""

    id: str
    alert_id: str
    owner_id: str
    household_id: str
    state: str  # firing, resolved or acknowledged
    payload: dict[str, Any]  # the message's data
    recorded_at: datetime


def transition(
    alert: Alert, rule: AlertRule, state: str, value: float, at_ms: int, now: datetime
) -> Transition:
    """The transition of `alert` into `state` at `at_ms`, as recorded at `now`."""
    tid = transition_id(alert.id, state)
    payload = {
        "id": tid,
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "rule_name": rule.name,
        "metric": rule.metric,
        "user_id": alert.owner_id,
        "household_id": alert.household_id,
        "device_id": alert.device_id,
        "state": state,
        "severity": alert.severity,
        "value": value,
        "threshold": alert.threshold,
        "at": ms_to_datetime(at_ms).isoformat(),
        "at_ms": at_ms,
        # When the service decided: with `at_ms` (a reading's own time for power rules) this
        # gives the evaluation lag; a benchmark adds the bus hop by timing the message itself.
        "evaluated_at_ms": round(now.timestamp() * 1000),
    }
    return Transition(tid, alert.id, alert.owner_id, alert.household_id, state, payload, now)


def notifications(
    rule: AlertRule,
    alert: Alert,
    event: Transition,
    now: datetime,
    members: Sequence[str] = (),
) -> list[Delivery]:
    """One delivery per channel of the rule for a firing or resolved transition, and an e-mail
    to each of `members` (the household's who asked for them) the rule does not mail already."""
    mailed = {c["to"] for c in rule.channels if c["type"] == "email"}
    channels = [
        *rule.channels,
        *({"type": "email", "to": to} for to in members if to not in mailed),
    ]
    out = []
    for index, channel in enumerate(channels):
        did = delivery_id(event.id, index)
        body = {"delivery_id": did, "event": event.state, "alert": alert_view(alert, rule)}
        out.append(
            Delivery(
                id=did,
                alert_id=alert.id,
                channel=channel["type"],
                target=channel["url"] if channel["type"] == "webhook" else channel["to"],
                secret=channel.get("secret"),
                event=event.state,
                payload=orjson.dumps(body).decode(),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                last_error=None,
                created_at=now,
                delivered_at=None,
            )
        )
    return out


@dataclass
class Outcome:
    """What one (rule, scope) evaluation writes."""

    state: EvalState
    alerts: dict[str, Alert] = field(default_factory=dict)  # final rows, by id
    created: set[str] = field(default_factory=set)  # ids of `alerts` that are new
    transitions: list[Transition] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


def apply_steps(
    rule: AlertRule,
    scope: str,
    state: EvalState,
    open_alert: Alert | None,
    steps: list[Step],
    now: datetime,
    members: Sequence[str] = (),
) -> Outcome:
    """Fold evaluation steps into rows: a FIRED step opens an alert (and notifies), an UPDATED
    step moves its value, peak and last-seen time, a RESOLVED step closes it (and notifies the
    rule's channels and `members`' e-mails).

    `open_alert` is the alert `state` says is firing, as stored (None when none is)."""
    outcome = Outcome(state)
    current = open_alert
    for s in steps:
        outcome.state = s.state
        at = ms_to_datetime(s.at)
        if s.change is Change.FIRED:
            current = Alert(
                id=alert_id(rule.id, scope, s.at),
                rule_id=rule.id,
                owner_id=rule.owner_id,
                household_id=rule.household_id,
                device_id=None if scope == ALL_DEVICES else scope,
                state=FIRING,
                acknowledged=False,
                acknowledged_at=None,
                severity=rule.severity,
                value=s.value,
                peak_value=s.value,
                threshold=rule.threshold,
                started_at=at,
                resolved_at=None,
                last_seen_at=at,
            )
            outcome.created.add(current.id)
            _notify(outcome, rule, current, FIRING, s, now, members)
        elif s.change is Change.UPDATED and current is not None:
            peak = s.state.peak if s.state.peak is not None else s.value
            current = replace(current, value=s.value, peak_value=peak, last_seen_at=at)
        elif s.change is Change.RESOLVED and current is not None:
            current = replace(current, state=RESOLVED, value=s.value, resolved_at=at)
            _notify(outcome, rule, current, RESOLVED, s, now, members)
        else:
            continue
        outcome.alerts[current.id] = current
    return outcome


def _notify(
    outcome: Outcome,
    rule: AlertRule,
    alert: Alert,
    state: str,
    s: Step,
    now: datetime,
    members: Sequence[str],
) -> None:
    event = transition(alert, rule, state, s.value, s.at, now)
    outcome.transitions.append(event)
    outcome.deliveries.extend(notifications(rule, alert, event, now, members))
