"""The life of one rule over one scope as a pure state machine: no I/O, no clock.

Each observation is a value at an instant (epoch ms). The consumer feeds readings, usage
updates and silence checks through `step`, stores the returned state, and turns each returned
change into rows and messages. Because the state carries everything the decision depends on,
replaying observations the state has already seen changes nothing.

Semantics:
- *Breached*: the value is past the threshold (`gt`: above it, `lt`: below it).
- *Cleared*: the value is back on the safe side of the clear threshold (`gt`: at or below it,
  `lt`: at or above it). The clear threshold defaults to the threshold; a clear threshold a
  little inside it (hysteresis) keeps a value hovering at the threshold from flapping.
- An alert fires once the value has been breached continuously for `for_ms` (0: at once) and
  no cooldown is running. A value that is not breached, even inside the hysteresis band,
  restarts that wait.
- While it fires, every observation that does not clear it updates its value and peak;
  it sends nothing. When it clears it resolves, and a cooldown of `cooldown_ms` starts:
  no new alert fires before the cooldown ends (the condition is checked again after).
- An observation older than the newest one seen is ignored, so the state never goes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class Change(StrEnum):
    """What one observation did to the alert of a (rule, scope)."""

    NONE = "none"  # no alert open, none fired (a `for` wait may have started or reset)
    FIRED = "fired"
    UPDATED = "updated"  # the open alert is still breached: new value, maybe a new peak
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Condition:
    """The part of a rule that decides: comparison, thresholds and durations."""

    op: str  # "gt" or "lt"
    threshold: float
    clear_threshold: float | None = None
    for_ms: int = 0
    cooldown_ms: int = 0

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == "gt" else value < self.threshold

    def cleared(self, value: float) -> bool:
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        return value <= clear if self.op == "gt" else value >= clear

    def worse(self, a: float, b: float) -> float:
        """The value further past the threshold: the peak of an alert."""
        return max(a, b) if self.op == "gt" else min(a, b)


@dataclass(frozen=True, slots=True)
class EvalState:
    """Everything the next decision depends on; epoch ms throughout."""

    last_at: int | None = None  # the newest observation seen
    pending_since: int | None = None  # breached continuously since (the `for` wait)
    firing_since: int | None = None  # the open alert's start; None when none is open
    peak: float | None = None  # the open alert's peak value
    cooldown_until: int | None = None  # no new alert fires before this


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one observation."""

    state: EvalState
    change: Change
    value: float
    at: int


def step(cond: Condition, state: EvalState, value: float, at: int) -> Step:
    """Apply one observation (`value` at `at`) to `state`."""
    if state.last_at is not None and at < state.last_at:
        return Step(state, Change.NONE, value, at)
    state = replace(state, last_at=at)
    if state.firing_since is not None:
        if cond.cleared(value):
            resolved = replace(
                state,
                pending_since=None,
                firing_since=None,
                peak=None,
                cooldown_until=at + cond.cooldown_ms if cond.cooldown_ms else None,
            )
            return Step(resolved, Change.RESOLVED, value, at)
        peak = value if state.peak is None else cond.worse(state.peak, value)
        return Step(replace(state, peak=peak), Change.UPDATED, value, at)
    if not cond.breached(value):
        return Step(replace(state, pending_since=None), Change.NONE, value, at)
    since = at if state.pending_since is None else state.pending_since
    cooling = state.cooldown_until is not None and at < state.cooldown_until
    if at - since < cond.for_ms or cooling:
        return Step(replace(state, pending_since=since), Change.NONE, value, at)
    fired = replace(state, pending_since=since, firing_since=at, peak=value, cooldown_until=None)
    return Step(fired, Change.FIRED, value, at)


def run(cond: Condition, state: EvalState, samples: list[tuple[int, float]]) -> list[Step]:
    """`step` over (at, value) samples in order; the last step's state is the new state."""
    steps = []
    for at, value in samples:
        result = step(cond, state, value, at)
        steps.append(result)
        state = result.state
    return steps


def rising_due(cond: Condition, state: EvalState, since: int) -> int | None:
    """For a value that rises by one a second from zero at `since` (a silence, in seconds, with
    op `gt`), the first instant at which observing it changes `state`: where it passes the
    threshold, or where its `for` wait and its cooldown are both over. None while an alert is
    open: only a new reading, which starts the value again from zero, ends it."""
    if state.firing_since is not None:
        return None
    # The first millisecond at which (t - since) / 1000 > threshold, as `step` will compute it.
    after = math.floor(cond.threshold * 1000)
    while after / 1000 <= cond.threshold:
        after += 1
    while (after - 1) / 1000 > cond.threshold:
        after -= 1
    breached = since + after
    if state.pending_since is None:
        return breached
    return max(breached, state.pending_since + cond.for_ms, state.cooldown_until or 0)
