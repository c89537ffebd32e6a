"""The fault suite: while a driver streams a known set of readings through the gateway, services
are killed with SIGKILL and restarted every few seconds, and (split mode) the broker, MariaDB and
PostgreSQL are taken away and brought back. At the end every bucket holds exactly the energy and
the samples the readings give (tests/chaos/plan.py works them out by hand), each alert
transition was notified once, and the DLQs hold the poison messages that were sent, nothing else.

Embedded: `energy-tracker up` on the embedded bus and SQLite (the only process, killed and
restarted). Split: users, devices, ingestion, usage, alerts and the gateway each in its own
process, on Tansu, a private MariaDB and a private PostgreSQL that this suite starts itself on
free ports (never the machine's shared servers).

`make test` runs a short leg (one trial each, a few kills, short outages); `make chaos` runs the
long one: ET_CHAOS_TRIALS trials of ET_CHAOS_SECONDS of streaming each, ET_CHAOS_METERS meters
over ET_CHAOS_DAYS days, a kill every ET_CHAOS_KILL_EVERY_S, outages of ET_CHAOS_OUTAGE_S.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.events import ENERGY_READINGS, TOPICS
from tests.alert_receivers import WebhookReceiver
from tests.backends import mysql_admin, pg_admin
from tests.chaos.driver import Driver
from tests.chaos.faults import Chaos, Fleet, Outage, frozen_broker
from tests.chaos.plan import (
    ALERT_THRESHOLD_W,
    HOUR_MS,
    PULSE_RUN,
    Plan,
    pulse_power,
)
from tests.chaos.report import RESULTS, TrialResult
from tests.e2e.accounts import items_when, new_device, signed_up
from tests.kafka_broker import Broker, tansu
from tests.private_servers import PrivateMariaDB, PrivatePostgres, private_mariadb, private_postgres
from tests.processes import ServiceProcess, running_up, split_deployment


def _env(name: str, short: float) -> float:
    return float(os.environ.get(name, short))


TRIALS = int(_env("ET_CHAOS_TRIALS", 1))
STREAM_S = _env("ET_CHAOS_SECONDS", 6)
METERS = int(_env("ET_CHAOS_METERS", 2))
DAYS = int(_env("ET_CHAOS_DAYS", 1))
KILL_EVERY_S = _env("ET_CHAOS_KILL_EVERY_S", 3)
# The broker must stay away longer than ingestion's publish timeout (15 s) for a 503 to come.
BROKER_OUTAGE_S = _env("ET_CHAOS_BROKER_OUTAGE_S", 17)
DB_OUTAGE_S = _env("ET_CHAOS_DB_OUTAGE_S", 3)
SEED = int(os.environ.get("ET_CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
SECRET = "chaos-suite-secret-that-is-long-enough-0123456789"
SETTLE_S = 240.0  # how long the services may take to catch up once the faults stop
# A trial takes minutes on a busy two-core machine; the long run gives each its own budget.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900 * TRIALS)]
POISON = (
    b"\xffnot json at all",
    orjson.dumps({"v": 1, "type": "readings-recorded", "data": "not a reading"}),
)


def test_chaos_embedded(tmp_path: Path) -> None:
    for trial in range(TRIALS):
        root = tmp_path / f"trial{trial}"
        root.mkdir()
        with running_up(root) as up:
            procs = {"up": up}
            try:
                run_trial("embedded", trial, procs, f"embedded:///{root}/data/bus.db", root, [])
            finally:
                procs["up"].stop()  # the last one started, if a kill replaced `up`


@pytest.mark.kafka
@pytest.mark.mysql
@pytest.mark.postgres
def test_chaos_split(tmp_path: Path) -> None:
    with private_mariadb(tmp_path) as mariadb, private_postgres(tmp_path) as postgres:
        for trial in range(TRIALS):
            root = tmp_path / f"trial{trial}"
            root.mkdir()
            with split_trial(root, mariadb, postgres) as (procs, broker):
                outages = [
                    frozen_broker(broker.proc, BROKER_OUTAGE_S),
                    Outage("mariadb", DB_OUTAGE_S, mariadb.kill, mariadb.start),
                    Outage("postgresql", DB_OUTAGE_S, postgres.kill, postgres.start),
                ]
                run_trial("split", trial, procs, broker.url, root, outages)


@contextmanager
def split_trial(
    root: Path, mariadb: PrivateMariaDB, postgres: PrivatePostgres
) -> Iterator[tuple[dict[str, ServiceProcess], Broker]]:
    """A fresh broker and fresh databases on the private servers, and every service in a
    process of its own behind one gateway."""
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    mysql_admin(f"CREATE DATABASE `{name}`", port=mariadb.port)
    pg_admin(f'CREATE DATABASE "{name}"', port=postgres.port)
    with tansu() as broker:
        env = {
            "ET_BUS_URL": broker.url,
            "ET_DB_URL": f"mysql://root@127.0.0.1:{mariadb.port}/{name}",
            "ET_TSDB_URL": f"postgresql://postgres@127.0.0.1:{postgres.port}/{name}",
            "ET_JWT_SECRET": SECRET,
        }
        services = ("users", "devices", "ingestion", "usage", "alerts")
        with split_deployment(root, services, env) as procs:
            yield procs, broker


def run_trial(
    mode: str,
    trial: int,
    procs: dict[str, ServiceProcess],
    bus_url: str,
    root: Path,
    outages: list[Outage],
) -> None:
    plan = Plan.ending_days_ago(METERS, DAYS)
    api = procs["gateway" if "gateway" in procs else "up"].url + "/api/v1"
    rng = random.Random(SEED + trial)
    started = time.monotonic()
    with ExitStack() as stack, httpx.Client(timeout=60.0) as http:
        webhook = stack.enter_context(WebhookReceiver())
        auth = signed_up(http, api, timezone="UTC")
        meters = [new_device(http, api, auth, name=f"meter {k}") for k in range(1, METERS + 1)]
        pulse_id, pulse_key = new_device(http, api, auth, name="pulse", type="plug")
        rule = {
            "name": "pulse over 1 kW",
            "device_id": pulse_id,
            "metric": "power_w",
            "period": "instant",
            "op": "gt",
            "threshold": ALERT_THRESHOLD_W,
            "severity": "warning",
            "channels": [{"type": "webhook", "url": webhook.url, "secret": "chaos-hook"}],
        }
        r = http.post(api + "/alert-rules", json=rule, headers=auth)
        assert r.status_code == 201, r.text
        asyncio.run(publish_poison(bus_url, meters[0][0].encode()))

        driver = Driver(api, deadline_s=STREAM_S * 10 + 600)
        stack.callback(driver.close)
        fleet = Fleet(procs, root)
        chaos = Chaos(
            fleet,
            sorted(procs),
            outages,
            KILL_EVERY_S,
            rng,
            driver.done,
            lambda fault: setattr(driver, "fault", fault),
        )
        setup_s, started = time.monotonic() - started, time.monotonic()
        chaos.start()
        try:
            pulses = stream(plan, meters, pulse_key, driver, chaos.outages_over)
        finally:
            driver.done.set()
            chaos.finish()
        fleet.check()
        stream_s, started = time.monotonic() - started, time.monotonic()

        result = TrialResult(
            mode=mode,
            trial=trial,
            seed=SEED + trial,
            setup_s=setup_s,
            stream_s=stream_s,
            kills=len(fleet.kills),
            outages=", ".join(chaos.log.outages) or "-",
            posts=driver.tally.posts,
            readings_sent=driver.tally.readings_accepted,
            answers=driver.tally.answers,
        )
        audit_meters(http, api, auth, plan, meters, result)
        audit_pulse(http, api, auth, pulse_id, pulses, result)
        audit_alerts(http, api, auth, pulse_id, len(pulses) // (2 * PULSE_RUN), webhook, result)
        audit_dead_letters(bus_url, result)
        result.settle_s = time.monotonic() - started
        RESULTS.append(result)

    during_broker = driver.tally.during("broker")
    assert not driver.tally.wrong, driver.tally.wrong
    assert not fleet.unplanned_exits, fleet.unplanned_exits
    assert result.lost == 0 and result.double_counted == 0, result
    assert result.energy_wrong == [], result.energy_wrong
    assert result.alerts == result.alerts_expected, result
    assert result.notified == 2 * result.alerts_expected, result
    assert result.unnotified == [] and result.over_notified == [], result
    assert result.dlq_unexpected == 0 and result.dlq_poison == len(POISON), result
    if outages:
        # The broker away longer than the publish timeout: ingestion said 503 (and what it
        # accepted, before, during and after, is all in the buckets: checked above).
        assert during_broker["503"] > 0, during_broker


def stream(
    plan: Plan,
    meters: list[tuple[str, str]],
    pulse_key: str,
    driver: Driver,
    outages_over: threading.Event,
) -> list[tuple[int, float]]:
    """Send every meter's hours in turn, spread over STREAM_S, a pulse reading after each POST;
    then pulse readings at the same pace until every outage is over and the last run has ended
    low. Returns the pulses sent (ts, W)."""
    batches = [
        (key, batch)
        for hour in zip(*(plan.meter_batches(k) for k in range(1, len(meters) + 1)), strict=True)
        for (_, key), batch in zip(meters, hour, strict=True)
    ]
    pause = STREAM_S / len(batches)
    pulses: list[tuple[int, float]] = []

    def pulse() -> None:
        ts = max(int(time.time() * 1000), pulses[-1][0] + 1 if pulses else 0)
        power = pulse_power(len(pulses))
        driver.send(pulse_key, [{"ts": ts, "power_w": power}])
        pulses.append((ts, power))

    for key, batch in batches:
        driver.send(key, batch)
        pulse()
        time.sleep(pause)  # the pace of the stream, not a synchronisation
    while not outages_over.is_set() or len(pulses) % (2 * PULSE_RUN):
        pulse()
        time.sleep(pause)
    return pulses


async def publish_poison(bus_url: str, key: bytes) -> None:
    """The poison messages, straight onto `energy-readings` as a broken producer would."""
    bus = bus_from_url(bus_url, 8)
    await bus.start()
    try:
        await bus.publish(ENERGY_READINGS, [(key, value) for value in POISON])
    finally:
        await bus.stop()


def _by_start(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(datetime.fromisoformat(i["period_start"]).timestamp() * 1000): i for i in items}


def usage(
    http: httpx.Client,
    api: str,
    auth: dict[str, str],
    device_id: str,
    granularity: str,
    span: tuple[int, int],
    done: Any,
) -> dict[int, dict[str, Any]]:
    params = {"granularity": granularity, "from": str(span[0]), "to": str(span[1])}
    items = items_when(
        http,
        api + f"/devices/{device_id}/usage",
        auth,
        params,
        lambda items: done(_by_start(items)),
        timeout_s=SETTLE_S,
        interval_s=1.0,
    )
    return _by_start(items)


def audit_meters(
    http: httpx.Client,
    api: str,
    auth: dict[str, str],
    plan: Plan,
    meters: list[tuple[str, str]],
    result: TrialResult,
) -> None:
    """Each meter's hours and days against the plan: readings lost or counted twice (samples),
    and any bucket whose kWh is not the hand-worked figure."""
    span = (plan.first_day_ms, plan.first_day_ms + (plan.hours + 1) * HOUR_MS)
    for k, (device_id, _) in enumerate(meters, start=1):
        want = plan.expected_hours(k)

        def matches(got: dict[int, dict[str, Any]], want: dict[int, tuple[float, int]] = want):
            return {s: (i["energy_kwh"], i["samples"]) for s, i in got.items()} == {
                s: (round(kwh, 6), n) for s, (kwh, n) in want.items()
            }

        got = usage(http, api, auth, device_id, "hour", span, matches)
        for start in want.keys() | got.keys():
            kwh, samples = want.get(start, (0.0, 0))
            item = got.get(start, {"energy_kwh": 0.0, "samples": 0})
            result.lost += max(0, samples - item["samples"])
            result.double_counted += max(0, item["samples"] - samples)
            if item["energy_kwh"] != round(kwh, 6):
                result.energy_wrong.append(f"meter {k} hour {start}: {item['energy_kwh']} ≠ {kwh}")
        days = plan.expected_days(k)
        got = usage(
            http,
            api,
            auth,
            device_id,
            "day",
            span,
            lambda got, days=days: (
                {s: i["energy_kwh"] for s, i in got.items() if i["energy_kwh"]}
                == {s: round(v, 6) for s, v in days.items()}
            ),
        )
        for start, kwh in days.items():
            if got.get(start, {}).get("energy_kwh") != round(kwh, 6):
                result.energy_wrong.append(f"meter {k} day {start}: {got.get(start)} ≠ {kwh}")


def audit_pulse(
    http: httpx.Client,
    api: str,
    auth: dict[str, str],
    pulse_id: str,
    pulses: list[tuple[int, float]],
    result: TrialResult,
) -> None:
    """The pulse plug's readings: as many samples in its hours as readings were sent."""
    span = (pulses[0][0] // HOUR_MS * HOUR_MS, pulses[-1][0] // HOUR_MS * HOUR_MS + HOUR_MS)
    got = usage(
        http,
        api,
        auth,
        pulse_id,
        "hour",
        span,
        lambda got: sum(i["samples"] for i in got.values()) == len(pulses),
    )
    samples = sum(i["samples"] for i in got.values())
    result.lost += max(0, len(pulses) - samples)
    result.double_counted += max(0, samples - len(pulses))


def audit_alerts(
    http: httpx.Client,
    api: str,
    auth: dict[str, str],
    pulse_id: str,
    expected: int,
    webhook: WebhookReceiver,
    result: TrialResult,
) -> None:
    """One alert per run above the threshold, each fired and resolved; one webhook delivery
    (one delivery id) per transition, however often it was sent."""
    result.alerts_expected = expected
    alerts = items_when(
        http,
        api + "/alerts",
        auth,
        {"device_id": pulse_id, "limit": "1000"},
        lambda items: len(items) >= expected and all(a["state"] == "resolved" for a in items),
        timeout_s=SETTLE_S,
        interval_s=1.0,
    )
    result.alerts = len(alerts)
    transitions = {(a["id"], event) for a in alerts for event in ("firing", "resolved")}
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        delivered: dict[tuple[str, str], set[str]] = {}
        for hit in webhook.delivered():
            body = hit.json
            delivered.setdefault((body["alert"]["id"], body["event"]), set()).add(
                body["delivery_id"]
            )
        if delivered.keys() >= transitions:
            break
        time.sleep(0.5)
    result.notified = sum(len(ids) for t, ids in delivered.items() if t in transitions)
    result.unnotified = sorted(f"{a} {e}" for a, e in transitions - delivered.keys())
    result.over_notified = sorted(
        f"{t}: {sorted(ids)}"
        for t, ids in delivered.items()
        if len(ids) > 1 or t not in transitions
    )
    result.resends = len(webhook.delivered()) - sum(len(ids) for ids in delivered.values())


def audit_dead_letters(bus_url: str, result: TrialResult) -> None:
    """What every DLQ holds: the poison sent (each counted once however often it was
    dead-lettered), and anything else."""

    async def read_all() -> list[bytes]:
        bus = bus_from_url(bus_url, 8)
        await bus.start()
        found: list[bytes] = []
        try:
            for topic in TOPICS:
                consumer = await bus.subscribe(f"{topic}.dlq", f"chaos-audit-{uuid.uuid4().hex}")
                try:
                    while batch := await consumer.poll(1000, timeout_s=3.0):
                        found += [m.value for m in batch]
                finally:
                    await consumer.close()
        finally:
            await bus.stop()
        return found

    originals = [
        base64.b64decode(orjson.loads(v)["data"]["value_b64"]) for v in asyncio.run(read_all())
    ]
    result.dlq_poison = len(set(originals) & set(POISON))
    result.dlq_unexpected = len([o for o in originals if o not in POISON])
    result.dlq_repeats = len([o for o in originals if o in POISON]) - result.dlq_poison
