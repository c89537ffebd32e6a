"""When the alerts service looks again with nothing arriving, over the real embedded bus and
metadata database and the test's clock: the periodic check names the next instant time alone
can change something (a silence, a period's end, leftovers, the hourly prune), and the
dispatcher sleeps until the next delivery is due. Each instant is worked out by hand."""

from __future__ import annotations

from energy_tracker.core.energy import period_end, period_start
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity
from energy_tracker.services.alerts.notify import RetryPolicy
from tests.alert_receivers import WebhookReceiver
from tests.service.alerting import Alerting

HOUR_MS = 3_600_000


async def first_look(alerting: Alerting) -> int:
    """The check at start, then 10 s later (past the 5 s grace of transitions a previous run
    may have left): the first prunes, so the next prune is due an hour after it. Returns that."""
    started = alerting.clock.ms()
    assert await alerting.evaluator.check() == started + 5_000  # leftovers past their grace
    alerting.clock.advance(10)
    return started + HOUR_MS


async def test_with_no_rules_the_check_sleeps_until_the_hourly_prune(alerting: Alerting) -> None:
    prune = await first_look(alerting)
    assert await alerting.evaluator.check() == prune


async def test_a_silence_is_checked_the_millisecond_it_passes_its_threshold(
    alerting: Alerting,
) -> None:
    # Silent for more than 300 s: the kettle read at t, so the check is due at t + 300.001 s;
    # there it fires, and then only a reading (or the prune) is due.
    await alerting.rule(metric="silence", threshold=300.0, clear_threshold=None)
    prune = await first_look(alerting)
    read_at = alerting.clock.ms()
    await alerting.readings((0, 80.0))
    due = await alerting.evaluator.check()
    assert due == read_at + 300_001
    alerting.clock.now = due / 1000
    assert await alerting.evaluator.check() == prune
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.value) == ("firing", 300.001)


async def test_a_silence_of_all_devices_counts_from_the_rule_and_from_devices_to_come(
    alerting: Alerting,
) -> None:
    # All devices, 600 s, for 30 s; neither device has read. Made at r, the rule is due at
    # r + 600.001 s (both devices silent since then): pending there, firing 30 s later, at
    # r + 630.001 s. A device added later is silent from when it is added: no sooner.
    rule = await alerting.rule(
        metric="silence", device_id=None, threshold=600.0, for_s=30, clear_threshold=None
    )
    made = round(rule.created_at.timestamp() * 1000)
    await first_look(alerting)
    due = await alerting.evaluator.check()
    assert due == made + 600_001
    alerting.clock.now = due / 1000
    assert await alerting.evaluator.check() == made + 630_001
    assert await alerting.alerts() == []
    alerting.clock.now = (made + 630_001) / 1000
    # Both fired; a device added now would be silent 600.001 s from now.
    assert await alerting.evaluator.check() == made + 630_001 + 600_001
    assert len(await alerting.alerts()) == 2


async def test_an_alert_over_a_period_is_checked_when_the_period_ends(
    alerting: Alerting,
) -> None:
    # Energy this hour above 1 kWh: 1.5 kWh fires; the check is due when the hour ends (which
    # comes before the prune, an hour after the first check).
    await alerting.rule(metric="energy_kwh", period="hour", threshold=1.0, clear_threshold=None)
    await first_look(alerting)
    hour = period_start(alerting.clock.ms(), Granularity.HOUR)
    await alerting.usage(
        Bucket(alerting.device_id, Granularity.HOUR, hour, energy_wh=1500.0, cost=0.45, version=1)
    )
    (alert,) = await alerting.alerts()
    assert alert.state == "firing"
    assert await alerting.evaluator.check() == period_end(hour, Granularity.HOUR)


async def test_new_observations_of_a_rule_wake_the_check_and_the_check_does_not(
    alerting: Alerting,
) -> None:
    woken: list[str] = []
    alerting.evaluator.on_change = lambda: woken.append("change")
    await alerting.readings((0, 80.0))  # no rule watches the kettle: nothing to wake for
    assert woken == []
    await alerting.rule(metric="silence", threshold=300.0, clear_threshold=None)
    await alerting.readings((0, 80.0))
    assert woken == ["change"]
    await alerting.evaluator.check()
    assert woken == ["change"]


async def test_the_dispatcher_sleeps_until_the_next_delivery_is_due(
    alerting: Alerting, webhook: WebhookReceiver
) -> None:
    # Nothing pending: the longest sleep. The first POST fails; its retry is 30 s later, which
    # is how long the dispatcher then sleeps (the clock stands still).
    dispatcher = await alerting.use_dispatcher(
        smtp=None, deny_private=False, retry=RetryPolicy(first_delay_s=30.0), poll_s=60.0
    )
    assert await dispatcher.pause_s() == 60.0
    webhook.fail_first = 1
    await alerting.rule()
    await alerting.readings((-1, 2500.0))
    await dispatcher.dispatch_due()
    await dispatcher.settle()
    (delivery,) = await alerting.deliveries()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert await dispatcher.pause_s() == 30.0
