"""When the alerts' periodic check looks next: the instant a silence changes (its threshold
passed, its `for` wait and cooldown over), and how long the check sleeps for it. No I/O, no
clock: each expected instant is worked out by hand, then `step` shows that it is the first one
at which something changes."""

from __future__ import annotations

from energy_tracker.services.alerts.rules import Change, Condition, EvalState, rising_due, step
from energy_tracker.services.alerts.service import pause_s

S = 1000  # ms
SINCE = 1_700_000_000_000  # the last reading, epoch ms


def silent_s(at: int) -> float:
    """A silence's value at `at`, as the check computes it."""
    return (at - SINCE) / 1000


def test_a_silence_is_due_the_millisecond_after_its_threshold() -> None:
    # gt 300 s: at +300.000 s the value is 300.0, not above; at +300.001 s it is.
    cond = Condition("gt", 300.0)
    due = rising_due(cond, EvalState(), SINCE)
    assert due == SINCE + 300_001
    assert step(cond, EvalState(), silent_s(due - 1), due - 1).change is Change.NONE
    assert step(cond, EvalState(), silent_s(due), due).change is Change.FIRED


def test_a_fraction_of_a_second_in_the_threshold_is_kept() -> None:
    # 1.001 s: at +1.001 s the value equals it (not above); +1.002 s is the first above.
    assert rising_due(Condition("gt", 1.001), EvalState(), SINCE) == SINCE + 1_002


def test_a_pending_silence_is_due_when_its_for_wait_ends() -> None:
    # gt 300 s for 60 s: breached at +300.001 s (the check set it pending then), so it fires
    # 60 s later, at +360.001 s, and not a millisecond before.
    cond = Condition("gt", 300.0, for_ms=60 * S)
    pending = step(cond, EvalState(), silent_s(SINCE + 300_001), SINCE + 300_001).state
    assert pending.pending_since == SINCE + 300_001
    due = rising_due(cond, pending, SINCE)
    assert due == SINCE + 360_001
    assert step(cond, pending, silent_s(due - 1), due - 1).change is Change.NONE
    assert step(cond, pending, silent_s(due), due).change is Change.FIRED


def test_a_cooldown_holds_the_next_silence_until_it_ends() -> None:
    # Breached and pending since +300.001 s, but cooling down until +500 s: due at +500 s.
    cond = Condition("gt", 300.0, cooldown_ms=120 * S)
    cooling = EvalState(
        last_at=SINCE + 300_001, pending_since=SINCE + 300_001, cooldown_until=SINCE + 500_000
    )
    due = rising_due(cond, cooling, SINCE)
    assert due == SINCE + 500_000
    assert step(cond, cooling, silent_s(due - 1), due - 1).change is Change.NONE
    assert step(cond, cooling, silent_s(due), due).change is Change.FIRED


def test_an_open_silence_alert_waits_for_a_reading_not_the_clock() -> None:
    firing = EvalState(last_at=SINCE + 400_000, firing_since=SINCE + 300_001, peak=300.001)
    assert rising_due(Condition("gt", 300.0), firing, SINCE) is None


def test_the_check_sleeps_until_the_instant_named_within_bounds() -> None:
    now = SINCE
    assert pause_s(now + 12_345, now) == 12.345  # until then
    assert pause_s(now + 2 * 3600 * S, now) == 60.0  # at most a minute
    assert pause_s(now, now) == 1.0  # already due: a second, as a plain periodic check
    assert pause_s(now - 5 * S, now) == 1.0
