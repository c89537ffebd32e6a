"""Rule evaluation as a pure state machine: crossing and clearing with hysteresis, a `for`
duration met and not met, cooldown, and the rows a run of steps turns into. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime

import orjson
import pytest

from energy_tracker.services.alerts.lifecycle import apply_steps
from energy_tracker.services.alerts.models import AlertRule, alert_id, delivery_id, transition_id
from energy_tracker.services.alerts.notify import RetryPolicy, signature
from energy_tracker.services.alerts.rules import Change, Condition, EvalState, run, step
from energy_tracker.services.alerts.schemas import rule_problems
from energy_tracker.services.alerts.targets import refusal

S = 1000  # ms


def changes(cond: Condition, samples: list[tuple[int, float]]) -> list[str]:
    return [s.change.value for s in run(cond, EvalState(), samples)]


# -- crossing and clearing ---------------------------------------------------------------------


def test_hysteresis_keeps_a_hovering_value_from_flapping() -> None:
    # Fires above 2,000 W; clears only at or below 1,500 W. 1,900 W and 2,000 W after firing
    # are inside the band: still firing. 1,500 W clears it.
    cond = Condition("gt", 2000.0, clear_threshold=1500.0)
    got = changes(cond, [(0, 1900.0), (1, 2100.0), (2, 1900.0), (3, 2000.0), (4, 1500.0)])
    assert got == ["none", "fired", "updated", "updated", "resolved"]


def test_without_a_clear_threshold_the_threshold_itself_clears() -> None:
    # gt 2,000: 2,000.0 is not above it, so it clears at once.
    cond = Condition("gt", 2000.0)
    assert changes(cond, [(0, 2000.1), (1, 2000.0)]) == ["fired", "resolved"]


def test_a_value_in_the_band_before_firing_does_not_fire() -> None:
    cond = Condition("gt", 2000.0, clear_threshold=1500.0)
    assert changes(cond, [(0, 1800.0), (1, 1999.9), (2, 1600.0)]) == ["none"] * 3


def test_lt_rules_mirror_gt() -> None:
    # Battery below 100 W fires; it clears at or above 300 W.
    cond = Condition("lt", 100.0, clear_threshold=300.0)
    steps = run(cond, EvalState(), [(0, 50.0), (1, 20.0), (2, 200.0), (3, 300.0)])
    assert [s.change for s in steps] == [
        Change.FIRED,
        Change.UPDATED,
        Change.UPDATED,
        Change.RESOLVED,
    ]
    # The peak of an lt alert is its lowest value: 20 W.
    assert steps[2].state.peak == 20.0


def test_peak_is_the_highest_value_while_firing() -> None:
    cond = Condition("gt", 1000.0)
    steps = run(cond, EvalState(), [(0, 1200.0), (1, 3000.0), (2, 1500.0)])
    assert [s.state.peak for s in steps] == [1200.0, 3000.0, 3000.0]


# -- for ---------------------------------------------------------------------------------------


def test_for_duration_not_met_never_fires() -> None:
    # Must hold 60 s; it holds 0..50 s, dips at 55 s, holds again 56..110 s (54 s): never 60 s.
    cond = Condition("gt", 2000.0, for_ms=60 * S)
    samples = [(t * S, 2500.0) for t in range(0, 51, 10)]
    samples += [(55 * S, 1000.0)]
    samples += [(t * S, 2500.0) for t in range(56, 111, 9)]
    assert set(changes(cond, samples)) == {"none"}


def test_for_duration_met_fires_once_when_it_is_reached() -> None:
    # Over from 0 s; at 50 s it has held 50 s (< 60), at 60 s exactly 60 s: fires then.
    cond = Condition("gt", 2000.0, for_ms=60 * S)
    steps = run(cond, EvalState(), [(0, 2500.0), (50 * S, 2500.0), (60 * S, 2600.0)])
    assert [s.change for s in steps] == [Change.NONE, Change.NONE, Change.FIRED]
    assert steps[-1].state.firing_since == 60 * S
    assert steps[-1].state.pending_since == 0


def test_a_dip_into_the_hysteresis_band_restarts_the_for_wait() -> None:
    cond = Condition("gt", 2000.0, clear_threshold=1500.0, for_ms=30 * S)
    steps = run(cond, EvalState(), [(0, 2100.0), (20 * S, 1800.0), (25 * S, 2100.0)])
    assert steps[-1].state.pending_since == 25 * S


# -- cooldown ----------------------------------------------------------------------------------


def test_cooldown_holds_back_a_new_alert_until_it_ends() -> None:
    # Resolved at 10 s with a 60 s cooldown: over again at 20 s and 50 s fires nothing; at 70 s
    # (60 s after the resolution) it fires.
    cond = Condition("gt", 2000.0, cooldown_ms=60 * S)
    steps = run(
        cond,
        EvalState(),
        [(0, 2500.0), (10 * S, 1000.0), (20 * S, 2500.0), (50 * S, 2500.0), (70 * S, 2500.0)],
    )
    assert [s.change.value for s in steps] == ["fired", "resolved", "none", "none", "fired"]
    assert steps[1].state.cooldown_until == 70 * S


def test_without_cooldown_a_new_crossing_fires_again() -> None:
    cond = Condition("gt", 2000.0)
    assert changes(cond, [(0, 2500.0), (1, 100.0), (2, 2500.0)]) == ["fired", "resolved", "fired"]


# -- order -------------------------------------------------------------------------------------


def test_an_observation_older_than_the_newest_seen_changes_nothing() -> None:
    cond = Condition("gt", 2000.0)
    fired = step(cond, EvalState(), 2500.0, 100).state
    late = step(cond, fired, 10.0, 50)
    assert late.change is Change.NONE and late.state == fired


def test_replaying_what_the_state_has_seen_repeats_no_transition() -> None:
    cond = Condition("gt", 2000.0)
    samples = [(t, 2500.0) for t in range(100)]
    first = run(cond, EvalState(), samples)
    again = run(cond, first[-1].state, samples)
    assert {s.change for s in again} <= {Change.NONE, Change.UPDATED}


# -- from steps to rows ------------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def a_rule(**changes: object) -> AlertRule:
    fields: dict = {
        "id": "rule-1",
        "owner_id": "user-1",
        "household_id": "home-1",
        "device_id": "dev-1",
        "name": "kettle",
        "metric": "power_w",
        "period": "instant",
        "op": "gt",
        "threshold": 2000.0,
        "clear_threshold": 1500.0,
        "for_s": 0,
        "cooldown_s": 0,
        "severity": "critical",
        "channels": [
            {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret-s3cret"},
            {"type": "email", "to": "me@example.com"},
        ],
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return AlertRule(**fields)


def test_a_hundred_readings_over_the_threshold_make_one_alert_and_one_notification() -> None:
    rule = a_rule()
    steps = run(rule.condition, EvalState(), [(i * S, 2500.0 + i) for i in range(100)])
    outcome = apply_steps(rule, "dev-1", EvalState(), None, steps, NOW)
    assert len(outcome.alerts) == 1 and len(outcome.created) == 1
    assert [t.state for t in outcome.transitions] == ["firing"]
    # One notification per channel: one webhook, one e-mail.
    assert [d.channel for d in outcome.deliveries] == ["webhook", "email"]
    (alert,) = outcome.alerts.values()
    # Peak 2,500 + 99 = 2,599 W, last seen at the 100th reading (99 s).
    assert (alert.value, alert.peak_value) == (2599.0, 2599.0)
    assert alert.last_seen_at == datetime(1970, 1, 1, 0, 1, 39, tzinfo=UTC)


def test_members_who_asked_get_an_email_each_once() -> None:
    rule = a_rule()
    steps = run(rule.condition, EvalState(), [(5 * S, 2500.0)])
    # me@example.com is the rule's own e-mail channel already: not mailed twice.
    members = ["me@example.com", "partner@example.com"]
    outcome = apply_steps(rule, "dev-1", EvalState(), None, steps, NOW, members)
    assert [(d.channel, d.target) for d in outcome.deliveries] == [
        ("webhook", "http://127.0.0.1:9/hook"),
        ("email", "me@example.com"),
        ("email", "partner@example.com"),
    ]
    assert len({d.id for d in outcome.deliveries}) == 3


def test_ids_are_the_same_when_the_same_steps_are_applied_again() -> None:
    rule = a_rule()
    steps = run(rule.condition, EvalState(), [(5 * S, 2500.0), (6 * S, 1000.0)])
    once = apply_steps(rule, "dev-1", EvalState(), None, steps, NOW)
    twice = apply_steps(rule, "dev-1", EvalState(), None, steps, NOW)
    assert [t.id for t in once.transitions] == [t.id for t in twice.transitions]
    assert [d.id for d in once.deliveries] == [d.id for d in twice.deliveries]
    aid = alert_id("rule-1", "dev-1", 5 * S)
    assert list(once.alerts) == [aid]
    assert once.deliveries[2].id == delivery_id(transition_id(aid, "resolved"), 0)
    body = orjson.loads(once.deliveries[2].payload)
    assert body["event"] == "resolved" and body["alert"]["resolved_at"] is not None


def test_the_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"delivery_id":"d","event":"firing","alert":{}}'
    expected = hmac.new(b"s3cret-s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret-s3cret", body) == f"sha256={expected}"


def test_retries_back_off_exponentially_for_about_an_hour() -> None:
    policy = RetryPolicy()
    delays = [policy.next_delay_s(n) for n in range(1, 13)]
    # 4 s doubling: 4, 8, …, 512, then the 10-minute cap.
    assert delays == [4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600, 600]
    # Attempt 13 comes 1,020 + 4 x 600 = 3,420 s after the first, inside the hour; a 14th
    # would come at 4,020 s, past it, so the delivery is marked failed after the 13th.
    assert sum(delays) == 3420 <= policy.window_s < sum(delays) + 600


# -- bad rules ---------------------------------------------------------------------------------


def fields(**changes: object) -> dict:
    base: dict = {"metric": "power_w", "op": "gt", "threshold": 2000.0, "clear_threshold": None}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (fields(clear_threshold=2500.0), "clear_threshold"),
        (fields(op="lt", threshold=100.0, clear_threshold=50.0), "clear_threshold"),
        (fields(period="day"), "period"),
        (fields(metric="energy_kwh"), "period"),
        (fields(metric="energy_kwh", period="day", op="lt"), "op"),
        (fields(metric="silence", threshold=-5.0), "threshold"),
        (fields(metric="silence", threshold=600.0, clear_threshold=60.0), "clear_threshold"),
    ],
)
def test_inconsistent_rules_name_the_field(rule: dict, field: str) -> None:
    assert [p["field"] for p in rule_problems(rule)] == [field]


def test_a_consistent_rule_gets_its_default_period() -> None:
    rule = fields(clear_threshold=1500.0)
    assert rule_problems(rule) == [] and rule["period"] == "instant"


@pytest.mark.parametrize(
    ("address", "deny_private", "refused"),
    [
        ("169.254.169.254", False, True),
        ("::ffff:169.254.169.254", False, True),
        ("fe80::1", False, True),
        ("fd00:ec2::254", False, True),
        ("0.0.0.0", False, True),
        ("127.0.0.1", False, False),
        ("192.168.1.20", False, False),
        ("127.0.0.1", True, True),
        ("10.1.2.3", True, True),
        ("93.184.215.14", True, False),
    ],
)
def test_webhook_addresses(address: str, deny_private: bool, refused: bool) -> None:
    assert (refusal(ipaddress.ip_address(address), deny_private) is not None) is refused
