"""Alert rules, alerts and deliveries as plain values, and the deterministic ids that make a
redelivered message land on the rows it already made instead of new ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from energy_tracker.services.alerts.rules import Condition

METRICS = ("power_w", "energy_kwh", "cost", "silence", "anomaly")
PERIODS = ("instant", "hour", "day", "month")
SEVERITIES = ("info", "warning", "critical")

# The scope of a rule over all of its owner's devices summed (device-less alerts).
ALL_DEVICES = "*"

# Namespace of every alert id; any fixed UUID would do, this one must simply never change.
_NAMESPACE = uuid.UUID("6f0e3c1e-5b0c-4f4b-9a39-0c0a1e7e7a11")


def alert_id(rule_id: str, scope: str, started_at_ms: int) -> str:
    """The id of the alert a rule opened over a scope at an instant: the same on every replay."""
    return str(uuid.uuid5(_NAMESPACE, f"alert|{rule_id}|{scope}|{started_at_ms}"))


def transition_id(alert: str, state: str) -> str:
    """The id of an alert's transition into `state`: each alert enters each state once."""
    return str(uuid.uuid5(_NAMESPACE, f"transition|{alert}|{state}"))


def delivery_id(transition: str, channel_index: int) -> str:
    """The id of one notification of a transition over the rule's `channel_index`th channel."""
    return str(uuid.uuid5(_NAMESPACE, f"delivery|{transition}|{channel_index}"))


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def datetime_to_ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def condition_of(
    op: str, threshold: float, clear_threshold: float | None, for_s: int, cooldown_s: int
) -> Condition:
    """The deciding part of a rule (stored, or a draft being previewed) for the engine."""
    return Condition(op, threshold, clear_threshold, for_s * 1000, cooldown_s * 1000)


@dataclass(frozen=True)
class AlertRule:
    """A rule as stored. `device_id` None: all of the household's devices."""

    id: str
    owner_id: str  # the account that made it
    household_id: str
    device_id: str | None
    name: str
    metric: str  # one of METRICS
    period: str  # one of PERIODS: "instant", or the usage granularity (hour, day, month) summed
    op: str  # "gt" or "lt"
    threshold: float
    clear_threshold: float | None
    for_s: int
    cooldown_s: int
    severity: str  # one of SEVERITIES
    channels: list[dict[str, Any]]  # webhook {url, secret} and email {to}; in-app is implicit
    created_at: datetime
    updated_at: datetime

    @property
    def condition(self) -> Condition:
        """What `rules.step` needs; a silence threshold is seconds, compared in seconds."""
        return condition_of(
            self.op, self.threshold, self.clear_threshold, self.for_s, self.cooldown_s
        )


@dataclass(frozen=True)
class Alert:
    """One alert: opened when a rule fired over a scope, resolved when its condition cleared."""

    id: str
    rule_id: str
    owner_id: str  # the account that made its rule
    household_id: str
    device_id: str | None
    state: str  # "firing" or "resolved"
    acknowledged: bool
    acknowledged_at: datetime | None
    severity: str
    value: float
    peak_value: float
    threshold: float
    started_at: datetime
    resolved_at: datetime | None
    last_seen_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One notification of one transition over one channel, and how sending it went."""

    id: str
    alert_id: str
    channel: str  # "webhook" or "email"
    target: str  # the URL or the address
    secret: str | None
    event: str  # "firing" or "resolved"
    payload: str  # the exact JSON body sent (and signed)
    status: str  # "pending", "delivered" or "failed"
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class Attempt:
    """One try at sending a delivery."""

    delivery_id: str
    attempt: int
    at: datetime
    ok: bool
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Seen:
    """The newest reading the alerts consumer has of a device, and its newest power."""

    last_ts: int
    power_w: float | None = None
    power_ts: int | None = None


@dataclass(frozen=True)
class UsageValue:
    """One usage bucket as `usage-events` last described it."""

    device_id: str
    granularity: str
    period_start: int
    version: int
    energy_kwh: float
    cost: float
