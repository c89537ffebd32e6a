"""All of a user's devices summed (`GET /usage`) through `energy-tracker up`: devices whose days
are the asked zone's are summed by the store, a device in another zone adds its own days."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, running_up

MINUTE_MS = 60_000
TARIFF = {"type": "flat", "price_per_kwh": 0.30, "export_price_per_kwh": 0.08}


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def steady(device_id: str, start_iso: str, minutes: int, watts: float) -> list[dict]:
    """A reading a minute at `watts` over `minutes` minutes, the closing one included."""
    start = ms(start_iso)
    return [
        {"device_id": device_id, "ts": start + i * MINUTE_MS, "power_w": watts}
        for i in range(minutes + 1)
    ]


def day_once_counted(
    http: httpx.Client, api: str, auth: dict[str, str], readings: list[dict], day: str
) -> dict:
    """POST `readings` (all on the local `day`) and return the day's item of `GET /usage` once
    every one of them is counted (a sample each)."""
    r = http.post(api + "/readings", json={"readings": readings}, headers=auth)
    assert r.status_code == 202, r.text
    (item,) = items_when(
        http,
        api + "/usage",
        auth,
        {"granularity": "day", "from": day, "to": day + "T23:59:59Z"},
        lambda i: len(i) == 1 and i[0]["samples"] == len(readings),
    )
    return item


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path) as proc:
        yield proc


def test_all_devices_summed_by_day_and_hour(up_process: ServiceProcess) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, timezone="Europe/Berlin")
        berlin, _ = new_device(http, api, auth, name="meter")  # the owner's zone: Berlin
        utc, _ = new_device(http, api, auth, name="plug", timezone="UTC")
        # Berlin is UTC+1 in November. The meter: 1,000 W from 08:00 to 10:00 Berlin time on
        # the 20th: 2.0 kWh, 1.0 in each of the UTC hours 07 and 08. The plug: 600 W from
        # 22:30 to 23:30 UTC on the 19th, which is 23:30 to 00:30 Berlin time: 0.3 kWh on each
        # Berlin day, and on each UTC hour 22 and 23 (its own stored days are UTC ones, so its
        # Berlin days come from its quarters).
        readings = steady(berlin, "2026-11-20T08:00:00+01:00", 120, 1000.0) + steady(
            utc, "2026-11-19T22:30:00+00:00", 60, 600.0
        )
        r = http.post(api + "/readings", json={"readings": readings}, headers=auth)
        assert r.status_code == 202, r.text

        days = items_when(
            http,
            api + "/usage",
            auth,
            {"granularity": "day", "from": "2026-11-19", "to": "2026-11-21"},
            lambda i: len(i) == 2 and i[1]["energy_kwh"] > 2.29,
        )
        assert [(d["period_start"], d["energy_kwh"], d["max_power_w"]) for d in days] == [
            ("2026-11-19T00:00:00+01:00", pytest.approx(0.3), 600.0),
            ("2026-11-20T00:00:00+01:00", pytest.approx(2.3), 1000.0),
        ]

        hours = http.get(
            api + "/usage",
            params={
                "granularity": "hour",
                "from": "2026-11-19T22:00:00Z",
                "to": "2026-11-20T10:00:00Z",
                "tz": "UTC",
            },
            headers=auth,
        ).json()["items"]
        assert [(h["period_start"], h["energy_kwh"]) for h in hours] == [
            ("2026-11-19T22:00:00+00:00", pytest.approx(0.3)),
            ("2026-11-19T23:00:00+00:00", pytest.approx(0.3)),
            ("2026-11-20T07:00:00+00:00", pytest.approx(1.0)),
            ("2026-11-20T08:00:00+00:00", pytest.approx(1.0)),
            ("2026-11-20T09:00:00+00:00", 0.0),  # the meter's closing reading, nothing after
        ]


def test_a_metered_home_with_solar_and_a_battery_counts_each_kwh_once(
    up_process: ServiceProcess,
) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, timezone="UTC", tariff=TARIFF)
        meter, _ = new_device(http, api, auth, name="meter", role="grid")
        solar, _ = new_device(http, api, auth, name="roof", type="solar", role="production")
        battery, _ = new_device(http, api, auth, name="battery", type="battery", role="battery")
        fridge, _ = new_device(
            http, api, auth, name="fridge", type="plug", role="sub", parent_id=meter
        )
        kettle, _ = new_device(http, api, auth, name="kettle", type="plug")  # a consumer
        # 10:00-11:00 UTC, no sun: the meter imports 1,000 W (1.0 kWh, at 0.30: 0.30), the
        # battery discharges 500 W (-0.5 kWh), the fridge draws 100 W (0.1), the kettle 300 W
        # (0.3). Consumption = 1.0 + 0 - (-0.5) = 1.5 kWh; the plugs explain 0.4: other 1.1.
        # 12:00-13:00 UTC, sun: the roof makes 3,000 W (3.0 kWh), the battery charges 1,000 W
        # (1.0), the meter exports 1,500 W (-1.5 kWh, at 0.08: -0.12), the fridge 100 W (0.1),
        # the kettle 200 W (0.2). Consumption = -1.5 + 3.0 - 1.0 = 0.5 kWh; other 0.5 - 0.3 = 0.2.
        # The day: 2.0 kWh consumed (a plain sum of the devices would say 3.7), costing
        # 0.30 - 0.12 = 0.18.
        morning, noon = "2026-11-20T10:00:00+00:00", "2026-11-20T12:00:00+00:00"
        readings = (
            steady(meter, morning, 60, 1000.0)
            + steady(battery, morning, 60, -500.0)
            + steady(fridge, morning, 60, 100.0)
            + steady(kettle, morning, 60, 300.0)
            + steady(meter, noon, 60, -1500.0)
            + steady(solar, noon, 60, 3000.0)
            + steady(battery, noon, 60, 1000.0)
            + steady(fridge, noon, 60, 100.0)
            + steady(kettle, noon, 60, 200.0)
        )
        item = day_once_counted(http, api, auth, readings, "2026-11-20")
        day = {"granularity": "day", "from": "2026-11-20", "to": "2026-11-21"}
        assert item["energy_kwh"] == pytest.approx(2.0)
        assert item["cost"] == pytest.approx(0.18)
        # The terms: grid 1.0 - 1.5 = -0.5, production 3.0, battery -0.5 + 1.0 = 0.5, the
        # top-level plugs 0.1 + 0.3 + 0.1 + 0.2 = 0.7, other 2.0 - 0.7 = 1.3.
        terms = ("grid_kwh", "production_kwh", "battery_kwh", "loads_kwh", "other_kwh")
        assert [item[t] for t in terms] == [
            pytest.approx(-0.5),
            pytest.approx(3.0),
            pytest.approx(0.5),
            pytest.approx(0.7),
            pytest.approx(1.3),
        ]
        body = http.get(api + "/usage", params=day, headers=auth).json()
        assert body["metered"] is True
        assert body["consumption_kwh"] == pytest.approx(2.0)
        # The fridge 0.2 kWh (10 %), the kettle 0.5 (25 %), other 1.3 (65 %).
        assert [(b["device_id"], b["energy_kwh"], b["share_pct"]) for b in body["breakdown"]] == [
            (fridge, pytest.approx(0.2), pytest.approx(10.0)),
            (kettle, pytest.approx(0.5), pytest.approx(25.0)),
            (None, pytest.approx(1.3), pytest.approx(65.0)),
        ]
        hours = http.get(
            api + "/usage",
            params={"granularity": "hour", "from": morning, "to": "2026-11-20T13:00:00Z"},
            headers=auth,
        ).json()["items"]
        assert [(h["period_start"], h["energy_kwh"], h["cost"], h["other_kwh"]) for h in hours] == [
            (
                "2026-11-20T10:00:00+00:00",
                pytest.approx(1.5),
                pytest.approx(0.30),
                pytest.approx(1.1),
            ),
            ("2026-11-20T11:00:00+00:00", 0.0, 0.0, 0.0),  # the closing readings only
            (
                "2026-11-20T12:00:00+00:00",
                pytest.approx(0.5),
                pytest.approx(-0.12),
                pytest.approx(0.2),
            ),
        ]


def test_a_home_of_plugs_only_sums_its_plugs(up_process: ServiceProcess) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, timezone="UTC")
        lamp, _ = new_device(http, api, auth, name="lamp", type="plug")
        heater, _ = new_device(http, api, auth, name="heater", type="plug")
        # No meter: 100 W + 300 W for an hour = 0.1 + 0.3 = 0.4 kWh; nothing knows what else ran.
        readings = steady(lamp, "2026-11-20T10:00:00+00:00", 60, 100.0) + steady(
            heater, "2026-11-20T10:00:00+00:00", 60, 300.0
        )
        item = day_once_counted(http, api, auth, readings, "2026-11-20")
        day = {"granularity": "day", "from": "2026-11-20", "to": "2026-11-21"}
        assert (item["energy_kwh"], item["other_kwh"], item["grid_kwh"]) == (
            pytest.approx(0.4),
            None,
            None,
        )
        body = http.get(api + "/usage", params=day, headers=auth).json()
        assert (body["metered"], body["consumption_kwh"]) == (False, pytest.approx(0.4))
        # 0.1 of 0.4 = 25 %, 0.3 = 75 %; no "other" without a meter.
        assert [(b["device_id"], b["share_pct"]) for b in body["breakdown"]] == [
            (lamp, pytest.approx(25.0)),
            (heater, pytest.approx(75.0)),
        ]


def test_bad_roles_and_parents_are_422_naming_the_field(up_process: ServiceProcess) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        stranger = signed_up(http, api)
        meter, _ = new_device(http, api, auth, name="meter", role="grid")
        theirs, _ = new_device(http, api, stranger, name="their meter", role="grid")
        plug, _ = new_device(http, api, auth, name="plug", type="plug", role="sub", parent_id=meter)

        def refused(method: str, path: str, body: dict[str, object]) -> str:
            r = http.request(method, api + path, json=body, headers=auth)
            assert r.status_code == 422, r.text
            return str(r.json()["error"]["details"][0]["field"]).split(".")[-1]

        new = {"name": "x", "type": "plug"}
        assert refused("POST", "/devices", {**new, "role": "sub"}) == "parent_id"
        assert (
            refused("POST", "/devices", {**new, "role": "sub", "parent_id": theirs}) == "parent_id"
        )
        assert refused("POST", "/devices", {**new, "role": "kitchen"}) == "role"
        assert refused("PATCH", f"/devices/{plug}", {"parent_id": plug}) == "parent_id"
        assert refused("PATCH", f"/devices/{meter}", {"role": "production"}) == "role"
        assert refused("PATCH", f"/devices/{meter}", {"role": None}) == "role"
        r = http.get(api + f"/devices/{plug}", headers=auth)
        assert (r.json()["role"], r.json()["parent_id"]) == ("sub", meter)


def test_a_home_without_a_meter_but_with_solar_is_priced_quarter_by_quarter(
    up_process: ServiceProcess,
) -> None:
    api = up_process.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api, timezone="UTC", tariff=TARIFF)
        plug, _ = new_device(http, api, auth, name="plug", type="plug")
        panel, _ = new_device(http, api, auth, name="balcony", type="solar", role="production")
        # No meter: what crossed the boundary is the plug less the panel, quarter by quarter.
        # 10:00-11:00: plug 1,000 W, panel 600 W: 0.1 kWh imported each quarter, 0.4 kWh at
        # 0.30 = 0.12. 12:00-13:00: plug 200 W, panel 1,000 W: 0.2 kWh exported each quarter,
        # 0.8 kWh at 0.08 = -0.064. The day: 0.12 - 0.064 = 0.056, where the plug's own cost
        # (1.2 kWh as imports) would say 0.36. Consumption: the plug's 1.0 + 0.2 = 1.2 kWh.
        morning, noon = "2026-11-20T10:00:00+00:00", "2026-11-20T12:00:00+00:00"
        readings = (
            steady(plug, morning, 60, 1000.0)
            + steady(panel, morning, 60, 600.0)
            + steady(plug, noon, 60, 200.0)
            + steady(panel, noon, 60, 1000.0)
        )
        item = day_once_counted(http, api, auth, readings, "2026-11-20")
        assert (item["energy_kwh"], item["cost"], item["production_kwh"]) == (
            pytest.approx(1.2),
            pytest.approx(0.056),
            pytest.approx(1.6),
        )
