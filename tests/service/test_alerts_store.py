"""The alert store on every metadata backend (SQLite, MariaDB, PostgreSQL): the conditional
writes that keep replicas from acting twice, and the merges that keep only what is newer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.services.alerts.lifecycle import Outcome, apply_steps
from energy_tracker.services.alerts.models import AlertRule, Seen, UsageValue
from energy_tracker.services.alerts.rules import EvalState, run
from energy_tracker.services.alerts.store import AlertStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.store import UserStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW_MS = round(NOW.timestamp() * 1000)


@dataclass
class World:
    store: AlertStore
    user_id: str
    household_id: str
    device_id: str
    other_device_id: str
    rule: AlertRule


@pytest.fixture
async def world(metadata_db: Database) -> World:
    user = await UserStore(metadata_db).create("owner@example.com", "x")
    device = await DeviceStore(metadata_db).create(user.id, "plug", "plug", "1" * 64)
    other = await DeviceStore(metadata_db).create(user.id, "meter", "meter", "2" * 64)
    store = AlertStore(metadata_db)
    rule = await store.rules.create(
        user.id,
        device.household_id,
        NOW,
        name="kettle",
        device_id=device.id,
        metric="power_w",
        period="instant",
        op="gt",
        threshold=2000.0,
        clear_threshold=None,
        for_s=0,
        cooldown_s=0,
        severity="warning",
        channels=[{"type": "webhook", "url": "http://127.0.0.1:9/", "secret": "0123456789"}],
    )
    return World(store, user.id, device.household_id, device.id, other.id, rule)


def fired(rule: AlertRule, at_ms: int = NOW_MS) -> Outcome:
    steps = run(rule.condition, EvalState(), [(at_ms, 2500.0)])
    return apply_steps(rule, rule.device_id or "*", EvalState(), None, steps, NOW)


async def test_two_writers_of_one_new_state_conflict(world: World) -> None:
    key = (world.rule.id, world.device_id)
    with pytest.raises(Conflict):
        async with world.store.evaluations.begin() as first:
            assert await first.states([key]) == {}
            async with world.store.evaluations.begin() as second:
                await second.save(*key, None, fired(world.rule), None)
            await first.save(*key, None, fired(world.rule), None)
    assert len(await world.store.alerts.list(None)) == 1


async def test_a_write_on_a_version_that_moved_conflicts(world: World) -> None:
    key = (world.rule.id, world.device_id)
    async with world.store.evaluations.begin() as ev:
        await ev.save(*key, None, fired(world.rule), None)
    with pytest.raises(Conflict, match="moved meanwhile"):
        async with world.store.evaluations.begin() as first:
            stale = (await first.states([key]))[key]
            async with world.store.evaluations.begin() as second:
                current = (await second.states([key]))[key]
                await second.save(*key, current, Outcome(current.state), None)
            await first.save(*key, stale, Outcome(stale.state), None)
    async with world.store.evaluations.begin() as ev:
        assert (await ev.states([key]))[key].version == 2


async def test_device_seen_keeps_the_newest(world: World) -> None:
    d = world.device_id
    async with world.store.evaluations.begin() as ev:
        await ev.put_seen({d: Seen(1000, 50.0, 1000)}, known=set())
    async with world.store.evaluations.begin() as ev:
        # Newer time, but a reading without power: the old power stays.
        await ev.put_seen({d: Seen(2000, None, None)}, known={d})
    async with world.store.evaluations.begin() as ev:
        await ev.put_seen({d: Seen(1500, 70.0, 1500)}, known={d})  # late: only power is newer
    async with world.store.evaluations.begin() as ev:
        assert (await ev.seen([d]))[d] == Seen(2000, 70.0, 1500)
        seen = await ev.households_seen([world.household_id])
        assert seen[world.household_id] == {d: Seen(2000, 70.0, 1500)}


async def test_usage_keeps_the_highest_version_and_gives_a_households_devices(world: World) -> None:
    hour = NOW_MS - NOW_MS % 3_600_000
    a = UsageValue(world.device_id, "hour", hour, 1, 1.0, 0.3)
    b = UsageValue(world.other_device_id, "hour", hour, 1, 2.0, 0.6)
    async with world.store.evaluations.begin() as ev:
        assert await ev.newer_usage([a, b]) == [a, b]
    async with world.store.evaluations.begin() as ev:
        newer = replace(a, version=2, energy_kwh=1.5, cost=0.45)
        # A repeat of version 1 is dropped; version 2 (1.5 kWh) replaces it.
        assert await ev.newer_usage([a, newer]) == [newer]
        assert await ev.usage_of(world.household_id, "hour", hour) == {
            world.device_id: (1.5, 0.45),
            world.other_device_id: (2.0, 0.6),
        }
        assert await ev.newer_usage([a]) == []
    assert await world.store.evaluations.prune_usage(hour + 1) == 2


async def test_one_dispatcher_wins_the_claim(world: World) -> None:
    outcome = fired(world.rule)
    async with world.store.evaluations.begin() as ev:
        await ev.save(world.rule.id, world.device_id, None, outcome, None)
    (due,) = await world.store.deliveries.due(NOW, 10)
    lease = NOW + timedelta(minutes=1)
    assert await world.store.deliveries.claim(due, lease)
    assert not await world.store.deliveries.claim(due, lease)
    assert await world.store.deliveries.due(NOW + timedelta(seconds=59), 10) == []


async def test_acknowledging_twice_records_one_transition(world: World) -> None:
    outcome = fired(world.rule)
    async with world.store.evaluations.begin() as ev:
        await ev.save(world.rule.id, world.device_id, None, outcome, None)
    (alert,) = outcome.alerts.values()
    acked, event = await world.store.alerts.acknowledge(
        alert, world.rule, NOW + timedelta(seconds=5)
    )
    again, none = await world.store.alerts.acknowledge(
        acked, world.rule, NOW + timedelta(seconds=9)
    )
    assert event is not None and none is None
    assert again.acknowledged_at == NOW + timedelta(seconds=5)
    states = [p["state"] for _, _, p in await world.store.transitions.since(None, NOW, 10)]
    assert states == ["firing", "acknowledged"]
    unpublished = await world.store.transitions.unpublished(NOW + timedelta(minutes=1), 10)
    assert len(unpublished) == 2
    await world.store.transitions.mark_published([tid for tid, _, _ in unpublished])
    assert await world.store.transitions.unpublished(NOW + timedelta(minutes=1), 10) == []


async def test_rules_watching_a_device_or_its_owner(world: World) -> None:
    summing = await world.store.rules.create(
        world.user_id,
        world.household_id,
        NOW,
        **{**_fields(world.rule), "device_id": None, "name": "house"},
    )
    on_other = await world.store.rules.watching(
        [world.other_device_id], [world.household_id], ["power_w"]
    )
    assert [r.id for r in on_other] == [summing.id]
    both = await world.store.rules.watching([world.device_id], [world.household_id], ["power_w"])
    assert {r.id for r in both} == {world.rule.id, summing.id}
    assert await world.store.rules.watching([world.device_id], [], ["silence"]) == []


async def test_deleting_a_rule_deletes_its_alerts(world: World) -> None:
    async with world.store.evaluations.begin() as ev:
        await ev.save(world.rule.id, world.device_id, None, fired(world.rule), None)
    assert await world.store.rules.delete(world.rule.id)
    assert await world.store.alerts.list(None) == []
    assert await world.store.deliveries.due(NOW, 10) == []


def _fields(rule: AlertRule) -> dict:
    skip = {"id", "owner_id", "household_id", "created_at", "updated_at"}
    return {k: v for k, v in vars(rule).items() if k not in skip}
