"""The alerts consumer over the real embedded bus and metadata database, with a real webhook
receiver on loopback: rules fire once, resolve, survive a crash before the offset commit, and
notify exactly once. Expected values are worked out by hand in each test."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected
from energy_tracker.core.energy import period_end, period_start
from energy_tracker.core.events import (
    ENERGY_READINGS,
    USAGE_EVENTS,
    Reading,
    readings_recorded,
    usage_updated,
)
from energy_tracker.core.stores.timeseries.base import Bucket, Granularity
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.alerts.consumer import GROUP, AlertEvaluator
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.household_store import HouseholdStore
from energy_tracker.services.users.store import UserStore
from tests.alert_receivers import WebhookReceiver
from tests.service.alerting import SECRET, Alerting, at, delivered

# -- instant power -----------------------------------------------------------------------------


async def test_crossing_and_clearing_with_hysteresis(alerting: Alerting) -> None:
    # gt 2,000 W, clears at or below 1,500 W. Readings one a second, one message each:
    # 1,900 (below) · 2,100 (fires) · 1,800 (band: still firing) · 2,600 (peak) · 1,600 (band)
    # · 1,400 (clears: resolved).
    await alerting.rule()
    watts = [1900.0, 2100.0, 1800.0, 2600.0, 1600.0, 1400.0]
    for i, w in enumerate(watts):
        await alerting.readings((i - 10, w))
    (alert,) = await alerting.alerts()
    assert alert.state == "resolved"
    assert alert.device_id == alerting.device_id
    assert (alert.value, alert.peak_value, alert.threshold) == (1400.0, 2600.0, 2000.0)
    # Fired by the 2nd reading (-9 s), last seen over at the 5th (-6 s), resolved by the 6th.
    assert alert.started_at == at(alerting.clock() - 9)
    assert alert.last_seen_at == at(alerting.clock() - 6)
    assert alert.resolved_at == at(alerting.clock() - 5)
    events = await alerting.events()
    assert [(e["state"], e["value"], e["alert_id"]) for e in events] == [
        ("firing", 2100.0, alert.id),
        ("resolved", 1400.0, alert.id),
    ]
    assert events[0]["at_ms"] == alerting.clock.ms(-9)
    assert [d.event for d in await alerting.deliveries()] == ["firing", "resolved"]


async def test_a_hundred_readings_over_the_threshold_give_one_alert_and_one_notification(
    alerting: Alerting,
    webhook: WebhookReceiver,
) -> None:
    # 2,500 W to 2,599 W, one a second for 100 s, in ten messages of ten.
    await alerting.rule()
    for m in range(10):
        await alerting.readings(*[(i - 100, 2500.0 + i) for i in range(m * 10, m * 10 + 10)])
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.peak_value) == ("firing", 2599.0)
    assert [e["state"] for e in await alerting.events()] == ["firing"]
    (delivery,) = await alerting.notify(delivered(1))
    assert (delivery.event, delivery.status, delivery.attempts) == ("firing", "delivered", 1)
    (hit,) = webhook.hits
    assert hit.signed_by(SECRET)
    assert hit.json["alert"]["id"] == alert.id and hit.json["event"] == "firing"


async def test_for_duration_held_across_messages_fires_and_one_not_met_does_not(
    alerting: Alerting,
) -> None:
    # Must hold 60 s. Device 1: over at -100 s and -45 s (55 s: not yet), under at -44 s: the
    # wait restarts; over at -43 s and -1 s (42 s): never fires.
    await alerting.rule(for_s=60)
    for s, w in [(-100, 2500.0), (-45, 2500.0), (-44, 1000.0), (-43, 2500.0), (-1, 2500.0)]:
        await alerting.readings((s, w))
    assert await alerting.alerts() == []
    # Over again at +17 s: 60 s since -43 s, held all along: fires at +17 s.
    alerting.clock.advance(20)
    await alerting.readings((-3, 2500.0))
    (alert,) = await alerting.alerts()
    assert alert.started_at == at(alerting.clock() - 3)


async def test_cooldown_holds_back_a_second_alert(alerting: Alerting) -> None:
    # Cooldown 60 s from the resolution at -190 s: over at -180 s fires nothing; over at
    # -120 s (60 s after) fires the second alert.
    await alerting.rule(cooldown_s=60)
    for s, w in [(-200, 2500.0), (-190, 1000.0), (-180, 2500.0), (-150, 2500.0), (-120, 2500.0)]:
        await alerting.readings((s, w))
    alerts = sorted(await alerting.alerts(), key=lambda a: a.started_at)
    assert [(a.state, a.started_at) for a in alerts] == [
        ("resolved", at(alerting.clock() - 200)),
        ("firing", at(alerting.clock() - 120)),
    ]


async def test_readings_of_the_past_judge_nothing(alerting: Alerting) -> None:
    # An hour-old backlog over the threshold is history, not an alert now.
    await alerting.rule()
    await alerting.readings((-3600, 5000.0), (-3599, 5000.0))
    assert await alerting.alerts() == []


async def test_power_of_all_devices_is_summed(alerting: Alerting) -> None:
    # All devices, gt 2,000 W: 1,200 W (kettle) alone is under; + 1,000 W (heat pump) a second
    # later makes 2,200 W: fires, with no device on the alert.
    await alerting.rule(device_id=None, clear_threshold=None)
    await alerting.readings((-5, 1200.0))
    assert await alerting.alerts() == []
    await alerting.readings((-4, 1000.0), device=alerting.other_device_id)
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.value) == (None, 2200.0)
    # The kettle drops to 500 W: 500 + 1,000 = 1,500 W, at or below 2,000: resolved.
    await alerting.readings((-3, 500.0))
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.value) == ("resolved", 1500.0)


async def _metered_home(alerting: Alerting) -> tuple[str, str]:
    """(meter, solar) added to the harness's home; the kettle plug moved behind the meter."""
    devices = DeviceStore(alerting.db)
    meter = await devices.create(alerting.user_id, "meter", "meter", "3" * 64, role="grid")
    solar = await devices.create(alerting.user_id, "pv", "solar", "4" * 64, role="production")
    await devices.update(alerting.device_id, role="sub", parent_id=meter.id)
    return meter.id, solar.id


async def test_summed_power_of_a_metered_home_counts_each_watt_once(alerting: Alerting) -> None:
    # All devices, gt 2,000 W. The kettle (2,500 W) sits behind the meter: it adds nothing.
    # The meter draws 1,500 W: 1,500. The solar makes 1,000 W: 1,500 + 1,000 = 2,500 W consumed:
    # fires. The meter exports 500 W (-500): -500 + 1,000 = 500 W: resolved.
    meter, solar = await _metered_home(alerting)
    await alerting.rule(device_id=None, clear_threshold=None)
    await alerting.readings((-6, 2500.0))
    await alerting.readings((-5, 1500.0), device=meter)
    assert await alerting.alerts() == []
    await alerting.readings((-4, 1000.0), device=solar)
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.state, alert.value) == (None, "firing", 2500.0)
    await alerting.readings((-3, -500.0), device=meter)
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.value) == ("resolved", 500.0)


async def _metered_hour(alerting: Alerting, metric: str, threshold: float) -> tuple[str, str, int]:
    """(meter, solar, hour): a rule on the home's `metric` this hour, and the hour's usage so
    far: the meter 2.0 kWh (0.60), the kettle behind it 1.5 kWh (0.45)."""
    meter, solar = await _metered_home(alerting)
    await alerting.rule(
        metric=metric, period="hour", device_id=None, threshold=threshold, clear_threshold=None
    )
    hour = period_start(alerting.clock.ms(), Granularity.HOUR)
    await alerting.usage(_bucket(meter, Granularity.HOUR, hour, 2.0, 0.6, 1))
    await alerting.usage(_bucket(alerting.device_id, Granularity.HOUR, hour, 1.5, 0.45, 1))
    return meter, solar, hour


async def test_summed_energy_of_a_metered_home_counts_each_kwh_once(alerting: Alerting) -> None:
    # Energy this hour above 2.5 kWh. The meter imported 2.0 kWh; the kettle behind it used 1.5
    # (already in the meter's 2.0: adds nothing, where a plain sum made 3.5 and fired); the
    # solar made 1.0 kWh, used at home: 2.0 + 1.0 = 3.0 kWh consumed: fires.
    _, solar, hour = await _metered_hour(alerting, "energy_kwh", 2.5)
    assert await alerting.alerts() == []
    await alerting.usage(_bucket(solar, Granularity.HOUR, hour, 1.0, 0.3, 1))
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.value) == (None, pytest.approx(3.0))


async def test_summed_cost_of_a_metered_home_is_the_meters(alerting: Alerting) -> None:
    # Cost this hour above 0.70: the meter's 2.0 kWh cost 0.60; the kettle behind it (0.45) and
    # the solar (0.30, its output priced as if bought) are no expense: 0.60 stays under, where
    # a plain sum (1.35) fired. The meter's hour grows to 2.5 kWh, 0.75: fires at 0.75.
    meter, solar, hour = await _metered_hour(alerting, "cost", 0.7)
    await alerting.usage(_bucket(solar, Granularity.HOUR, hour, 1.0, 0.3, 1))
    assert await alerting.alerts() == []
    await alerting.usage(_bucket(meter, Granularity.HOUR, hour, 2.5, 0.75, 2))
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.value) == (None, pytest.approx(0.75))


async def test_summed_cost_of_an_unmetered_home_with_solar_is_what_it_exchanged(
    alerting: Alerting, tmp_path: Path
) -> None:
    # No meter; the kettle and the heat pump are the loads, a solar inverter offsets them. Flat
    # 0.30 a kWh, exports 0.10. This hour's quarters: the first, kettle 1.0 + heat pump 0.2 -
    # solar 0.4 = 0.8 kWh imported (0.24); the second, heat pump 0.2 - solar 0.6 = 0.4 kWh
    # exported (-0.04): the hour costs 0.20, as GET /usage prices it (the loads' own cost,
    # 0.30 + 0.12 = 0.42, ignored what the solar saved and earned). Above 0.10: fires at 0.20.
    series = SqliteSeriesStore(str(tmp_path / "series.db"))
    await series.start()
    await series.migrate()
    try:
        solar = await DeviceStore(alerting.db).create(
            alerting.user_id, "pv", "solar", "4" * 64, role="production"
        )
        tariff = {"type": "flat", "price_per_kwh": 0.30, "export_price_per_kwh": 0.10}
        await HouseholdStore(alerting.db).update(alerting.household_id, tariff=tariff)
        hour = period_start(alerting.clock.ms(), Granularity.HOUR)
        second = hour + 15 * 60_000
        kettle, pump = alerting.device_id, alerting.other_device_id
        hours = [(kettle, 1.0, 0.30), (pump, 0.4, 0.12), (solar.id, 1.0, 0.30)]
        q = Granularity.QUARTER
        # As the usage service stored them: the quarters, and the hours its events announce.
        await series.put_buckets(
            [
                _bucket(kettle, q, hour, 1.0, 0.30, 1),
                _bucket(pump, q, hour, 0.2, 0.06, 1),
                _bucket(pump, q, second, 0.2, 0.06, 1),
                _bucket(solar.id, q, hour, 0.4, 0.12, 1),
                _bucket(solar.id, q, second, 0.6, 0.18, 1),
                *(_bucket(d, Granularity.HOUR, hour, kwh, cost, 1) for d, kwh, cost in hours),
            ]
        )
        evaluator = AlertEvaluator(
            alerting.bus,
            alerting.store,
            DeviceStore(alerting.db),
            max_gap_ms=900_000,
            clock=alerting.clock,
            series=series,
        )
        await alerting.rule(
            metric="cost", period="hour", device_id=None, threshold=0.1, clear_threshold=None
        )
        for device, kwh, cost in hours:
            message = alerting.message(
                USAGE_EVENTS, usage_updated(_bucket(device, Granularity.HOUR, hour, kwh, cost, 1))
            )
            assert await evaluator.handle_usage([message]) == []
        (alert,) = await alerting.alerts()
        assert (alert.device_id, alert.value) == (None, pytest.approx(0.20))
    finally:
        await series.stop()


# -- at least once -----------------------------------------------------------------------------


async def test_consumer_killed_after_evaluating_before_committing_notifies_once(
    alerting: Alerting,
    webhook: WebhookReceiver,
) -> None:
    await alerting.rule()
    records = [
        readings_recorded(
            alerting.device_id,
            [Reading(alerting.device_id, alerting.clock.ms(i - 60), power_w=2500.0)],
        )
        for i in range(50)
    ]
    await alerting.bus.publish(ENERGY_READINGS, records)
    handled: list[int] = []

    async def evaluate_then_die(batch: Sequence[Message]) -> list[Rejected]:
        await alerting.evaluator.handle_readings(batch)
        handled.append(len(batch))
        raise asyncio.CancelledError  # the process dies before the loop commits the offsets

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(
            ConsumeLoop(alerting.bus, ENERGY_READINGS, GROUP, evaluate_then_die).run(), 10
        )
    assert handled == [50]

    # The restarted consumer gets the same 50 messages again, and commits this time.
    restarted: ConsumeLoop

    async def evaluate(batch: Sequence[Message]) -> list[Rejected]:
        rejected = await alerting.evaluator.handle_readings(batch)
        handled.append(len(batch))
        restarted.stop()
        return rejected

    restarted = ConsumeLoop(alerting.bus, ENERGY_READINGS, GROUP, evaluate)
    await asyncio.wait_for(restarted.run(), 10)
    assert handled == [50, 50]

    (alert,) = await alerting.alerts()
    assert alert.state == "firing"
    assert [e["state"] for e in await alerting.events()] == ["firing"]
    (delivery,) = await alerting.notify(delivered(1))
    assert delivery.attempts == 1
    await asyncio.sleep(0.2)
    await alerting.dispatcher.dispatch_due()
    await alerting.dispatcher.settle()
    assert len(webhook.hits) == 1


async def test_transitions_left_unpublished_are_published_by_the_check(
    alerting: Alerting, tmp_path: Path
) -> None:
    # The bus is gone when the alert fires: the transition is stored but not on the topic.
    await alerting.rule()
    await alerting.bus.stop()
    await alerting.readings((-1, 2500.0))
    (alert,) = await alerting.alerts()
    alerting.bus = EmbeddedBus(str(tmp_path / "bus.db"), 1)
    await alerting.bus.start()
    alerting.evaluator.publisher.bus = alerting.bus
    await alerting.evaluator.check()
    assert await alerting.events() == []  # within the grace period the writer may still do it
    alerting.clock.advance(6)
    await alerting.evaluator.check()
    await alerting.evaluator.check()
    assert [(e["state"], e["alert_id"]) for e in await alerting.events()] == [("firing", alert.id)]


# -- silence -----------------------------------------------------------------------------------


async def test_a_silent_device_fires_and_resolves_when_it_reports_again(alerting: Alerting) -> None:
    await alerting.rule(
        name="freezer silent", metric="silence", threshold=300.0, clear_threshold=None
    )
    await alerting.readings((0, 80.0))
    alerting.clock.advance(300)  # silent exactly 300 s: not more than the threshold
    await alerting.evaluator.check()
    assert await alerting.alerts() == []
    alerting.clock.advance(1)  # 301 s
    await alerting.evaluator.check()
    alerting.clock.advance(30)
    await alerting.evaluator.check()  # still silent: the same alert, nothing new
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.device_id, alert.value) == ("firing", alerting.device_id, 301.0)
    assert alert.started_at == at(alerting.clock() - 30)
    await alerting.readings((0, 75.0))
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.resolved_at) == ("resolved", at(alerting.clock()))
    assert [e["state"] for e in await alerting.events()] == ["firing", "resolved"]


async def test_a_device_that_never_reported_is_silent_since_the_rule_began(
    alerting: Alerting,
) -> None:
    # All devices, 600 s: neither has reported. The heat pump reports at +300 s; at +601 s only
    # the kettle has been silent for more than 600 s (since the rule was made).
    await alerting.rule(metric="silence", device_id=None, threshold=600.0, clear_threshold=None)
    alerting.clock.advance(300)
    await alerting.readings((0, 900.0), device=alerting.other_device_id)
    alerting.clock.advance(301)
    await alerting.evaluator.check()
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.value) == (alerting.device_id, 601.0)


async def test_a_household_without_an_enabled_owner_has_no_silent_devices(
    alerting: Alerting,
) -> None:
    # The household's only owner is disabled: its devices are stopped (their readings are
    # refused), so a device that stops reporting is not news. Silent for 601 s of a 600 s rule,
    # no alert; once the owner is enabled again the same silence fires, 601 s + 30 s.
    await alerting.rule(metric="silence", device_id=None, threshold=600.0, clear_threshold=None)
    await alerting.readings((0, 900.0), device=alerting.other_device_id)
    await alerting.readings((0, 80.0))
    users = UserStore(alerting.db)
    await users.update(alerting.user_id, disabled=True)
    alerting.clock.advance(601)
    await alerting.evaluator.check()
    assert await alerting.alerts() == []
    await users.update(alerting.user_id, disabled=False)
    alerting.clock.advance(30)
    await alerting.evaluator.check()
    assert sorted((a.device_id, a.value) for a in await alerting.alerts()) == sorted(
        [(alerting.device_id, 631.0), (alerting.other_device_id, 631.0)]
    )


# -- energy and cost so far in a period --------------------------------------------------------


def _bucket(
    device: str, granularity: Granularity, start: int, kwh: float, cost: float, v: int
) -> Bucket:
    return Bucket(device, granularity, start, energy_wh=kwh * 1000, cost=cost, version=v)


async def test_energy_so_far_today_fires_once_and_resolves_when_the_day_ends(
    alerting: Alerting,
) -> None:
    # More than 5 kWh today (UTC, the owner's zone). Version 1 says 4 kWh: nothing; version 2
    # says 5.5 kWh: fires; version 1 again (redelivered, older) changes nothing.
    await alerting.rule(metric="energy_kwh", period="day", threshold=5.0, clear_threshold=None)
    day = period_start(alerting.clock.ms(), Granularity.DAY)
    await alerting.usage(_bucket(alerting.device_id, Granularity.DAY, day, 4.0, 1.2, 1))
    assert await alerting.alerts() == []
    await alerting.usage(_bucket(alerting.device_id, Granularity.DAY, day, 5.5, 1.65, 2))
    await alerting.usage(_bucket(alerting.device_id, Granularity.DAY, day, 4.0, 1.2, 1))
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.value) == ("firing", 5.5)
    # Yesterday's corrected bucket is over too, but yesterday is over: it raises nothing.
    yesterday = day - 86_400_000
    await alerting.usage(_bucket(alerting.device_id, Granularity.DAY, yesterday, 9.0, 2.7, 3))
    assert len(await alerting.alerts()) == 1
    # The day ends: the new day starts at 0 kWh, so the check resolves it at midnight.
    alerting.clock.now = period_end(day, Granularity.DAY) / 1000 + 2
    await alerting.evaluator.check()
    (alert,) = await alerting.alerts()
    assert (alert.state, alert.value) == ("resolved", 0.0)
    assert alert.resolved_at == at(period_end(day, Granularity.DAY) / 1000)


async def test_cost_this_hour_is_summed_over_the_owners_devices(alerting: Alerting) -> None:
    # Cost this hour above 1.00: the kettle's 0.60 alone is not; with the heat pump's 0.50 the
    # owner's hour costs 1.10: fires, on no single device.
    await alerting.rule(
        metric="cost", period="hour", device_id=None, threshold=1.0, clear_threshold=None
    )
    hour = period_start(alerting.clock.ms(), Granularity.HOUR)
    await alerting.usage(_bucket(alerting.device_id, Granularity.HOUR, hour, 2.0, 0.6, 1))
    assert await alerting.alerts() == []
    await alerting.usage(_bucket(alerting.other_device_id, Granularity.HOUR, hour, 1.6, 0.5, 1))
    (alert,) = await alerting.alerts()
    assert (alert.device_id, alert.value) == (None, pytest.approx(1.1))


async def test_messages_that_cannot_be_read_are_refused_with_the_reason(
    alerting: Alerting,
) -> None:
    await alerting.rule()
    # Readings are parsed only for devices that a rule watches (the usage consumer refuses
    # everyone's): garbage keyed by a watched device is refused here too.
    garbage = alerting.message(ENERGY_READINGS, (alerting.device_id.encode(), b"not json"))
    wrong = alerting.message(USAGE_EVENTS, (b"k", b'{"v":1,"type":"usage-updated","data":{}}'))
    (refused,) = await alerting.evaluator.handle_readings([garbage])
    assert refused.message == garbage and refused.reason.startswith("not JSON")
    (refused,) = await alerting.evaluator.handle_usage([wrong])
    assert refused.reason.startswith("bad usage payload")
