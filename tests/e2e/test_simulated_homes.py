"""`energy-tracker simulate --homes 3` against `energy-tracker up`: each simulated home's
`GET /usage` counts each kWh once. A home's main meter sees everything its plugs and EV charger
draw (they sit behind it), so its consumption is the meter's energy plus its solar's (what the
panels made and the home used or exported: the meter's net already subtracted the export), and
never the plain sum of its devices (the meter and the plugs behind it, counted twice)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from energy_tracker.simulator.driver import PASSWORD
from tests.processes import ServiceProcess, run_command, running_up

DAY_MS = 86_400_000


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path) as proc:
        yield proc


def day_kwh(http: httpx.Client, url: str, auth: dict[str, str], span: dict[str, str]) -> float:
    r = http.get(url, params={"granularity": "day", **span}, headers=auth)
    assert r.status_code == 200, r.text
    return float(sum(item["energy_kwh"] for item in r.json()["items"]))


def samples(http: httpx.Client, url: str, auth: dict[str, str], span: dict[str, str]) -> int:
    r = http.get(url, params={"granularity": "day", **span}, headers=auth)
    assert r.status_code == 200, r.text
    return int(sum(item["samples"] for item in r.json()["items"]))


def test_simulated_homes_count_each_kwh_once(up_process: ServiceProcess) -> None:
    # Half a day of three homes, a reading a minute; one POST a home (--batch), so each device's
    # readings reach the usage service in one message: a device has none of them, or all.
    args = ["simulate", "--homes", "3", "--backfill", "--days", "0.5", "--interval", "60s"]
    args += ["--batch", "100000", "--duration", "0", "--url", up_process.url]
    done = run_command(args, {}, timeout_s=300)
    assert done.returncode == 0, done.stderr
    emails = done.stdout.split("\n", 1)[1].split()
    assert len(emails) == 3
    api = up_process.url + "/api/v1"
    now = int(time.time() * 1000)
    span = {"from": str(now - DAY_MS), "to": str(now + 60_000)}
    with httpx.Client(timeout=30.0) as http:
        for email in emails:
            r = http.post(api + "/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            devices = http.get(api + "/devices", headers=auth).json()
            by_key = {d["name"]: d for d in devices}
            meter = by_key["Main meter"]
            assert (meter["role"], meter["parent_id"]) == ("grid", None)
            assert by_key["Fridge"]["role"] == "sub"
            assert by_key["Fridge"]["parent_id"] == meter["id"]
            deadline = time.monotonic() + 120
            counts: list[int] = []
            while time.monotonic() < deadline:
                counts = [
                    samples(http, f"{api}/devices/{d['id']}/usage", auth, span) for d in devices
                ]
                if min(counts) > 0 and len(set(counts)) == 1:
                    break
                time.sleep(0.5)
            assert min(counts) > 0 and len(set(counts)) == 1, counts

            energy = {
                d["name"]: day_kwh(http, f"{api}/devices/{d['id']}/usage", auth, span)
                for d in devices
            }
            consumed = day_kwh(http, api + "/usage", auth, span)
            solar = energy.get("Solar inverter", 0.0)
            # What the home used: the meter's net plus what its panels made.
            assert consumed == pytest.approx(energy["Main meter"] + solar, rel=1e-6, abs=1e-5)
            # The plugs' kWh (the fridge's among them) are inside the meter's: the plain sum of
            # every device counted them twice.
            plugs = sum(v for k, v in energy.items() if k not in ("Main meter", "Solar inverter"))
            assert plugs > 0
            assert sum(energy.values()) == pytest.approx(consumed + plugs, rel=1e-6, abs=1e-5)
            # "other" is what no plug explains: the hard-wired oven, the lights, the base load.
            body = http.get(
                api + "/usage", params={"granularity": "day", **span}, headers=auth
            ).json()
            other = body["breakdown"][-1]
            assert other["device_id"] is None
            assert other["energy_kwh"] == pytest.approx(consumed - plugs, rel=1e-5, abs=1e-4)
            assert other["energy_kwh"] > 0
