"""The insights API over buckets the real usage consumer computed: five weeks of a Berlin meter
(150 W always on, 2 kW more from 18:00 to 19:00, one day with 3 kW more from 10:00 to 14:00) and
a week of a 50 W plug, written to the embedded stores of a data directory, then read by an
`energy-tracker up` process on that directory. Expected values by hand.

Readings are energy counters every 15 minutes on the quarter, so each quarter's energy is exact
(a power step read as power would be smeared over the trapezoid of its neighbours).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from energy_tracker.core.auth import hash_password
from energy_tracker.core.bus.base import Message
from energy_tracker.core.bus.embedded import EmbeddedBus
from energy_tracker.core.events import TOPICS, Reading, readings_recorded
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.sqlite import SqliteSeriesStore
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.gateway.routes import API_PREFIX
from energy_tracker.services.usage.consumer import UsageConsumer
from energy_tracker.services.users.store import UserStore
from tests.e2e.accounts import PASSWORD, logged_in, signed_up
from tests.households import own_household
from tests.llm_server import serving
from tests.processes import running_up

BERLIN = ZoneInfo("Europe/Berlin")
QUARTER_MS = 15 * 60_000
ANOMALY_DAY = date(2026, 3, 4)  # a Wednesday
# Noon of Sunday 8 March, Berlin; the readings stop at its midnight.
AT = "2026-03-08T12:00:00+01:00"
PRICE = 0.30


def meter_w(local: datetime) -> float:
    watts = 150.0
    if local.hour == 18:
        watts += 2000.0
    if local.date() == ANOMALY_DAY and 10 <= local.hour < 14:
        watts += 3000.0
    return watts


def counter(
    device_id: str, first: date, last: date, watts: Callable[[datetime], float]
) -> list[list[Reading]]:
    """A counter read every quarter from local midnight of `first` to that of `last`, one
    message a day (the readings of the day and the next midnight's, as a meter would send)."""
    start = int(datetime(first.year, first.month, first.day, tzinfo=BERLIN).timestamp() * 1000)
    end = int(datetime(last.year, last.month, last.day, tzinfo=BERLIN).timestamp() * 1000)
    total = 0.0
    readings = [Reading(device_id, start, energy_wh=0.0)]
    for quarter in range(start, end, QUARTER_MS):
        local = datetime.fromtimestamp(quarter / 1000, BERLIN)
        total += watts(local) * 0.25  # W over a quarter of an hour, in Wh
        readings.append(Reading(device_id, quarter + QUARTER_MS, energy_wh=total))
    return [readings[i : i + 97] for i in range(0, len(readings) - 1, 96)]


@dataclass
class Home:
    meter: str
    plug: str
    owner: str  # emails
    other: str
    admin: str


async def _build(data: Path) -> Home:
    """Accounts and devices in the metadata store, buckets by the usage consumer."""
    db = Database(f"sqlite:///{data}/meta.db")
    series = SqliteSeriesStore(str(data / "series.db"))
    bus = EmbeddedBus(str(data / "bus.db"))
    await db.start()
    await db.migrate()
    await series.start()
    await series.migrate()
    await bus.start()
    await bus.ensure_topics(list(TOPICS))
    try:
        users, devices = UserStore(db), DeviceStore(db)
        secret = await hash_password(PASSWORD)
        owner = await users.create("owner@example.com", secret)
        tariff = {"type": "flat", "price_per_kwh": PRICE}
        await own_household(db, owner.id, timezone="Europe/Berlin", tariff=tariff)
        await users.create("other@example.com", secret)
        await users.create("admin@example.com", secret, role="admin")
        meter = await devices.create(owner.id, "meter", "meter", "1" * 64)
        plug = await devices.create(owner.id, "fridge plug", "plug", "2" * 64)
        consumer = UsageConsumer(bus, series, devices, 15 * 60_000)
        batches = counter(meter.id, date(2026, 2, 1), date(2026, 3, 8), meter_w)
        batches += counter(plug.id, date(2026, 3, 1), date(2026, 3, 8), lambda _: 50.0)
        for offset, batch in enumerate(batches):
            key, value = readings_recorded(batch[0].device_id, batch)
            assert await consumer.handle([Message("energy-readings", 0, offset, key, value)]) == []
        return Home(meter.id, plug.id, owner.email, "other@example.com", "admin@example.com")
    finally:
        await bus.stop()
        await series.stop()
        await db.stop()


@dataclass
class Api:
    http: httpx.Client
    url: str
    home: Home
    auth: dict[str, dict[str, str]]

    def get(self, path: str, who: str = "owner", **params: Any) -> httpx.Response:
        return self.http.get(self.url + path, params=params, headers=self.auth.get(who, {}))

    def ok(self, path: str, who: str = "owner", **params: Any) -> dict[str, Any]:
        r = self.get(path, who, **params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("insights")
    (tmp / "data").mkdir()
    home = asyncio.run(_build(tmp / "data"))
    with (
        serving() as llm,
        running_up(tmp, ET_LLM_URL=llm + "/facts") as up,
        httpx.Client(timeout=30.0) as http,
    ):
        url = up.url + API_PREFIX
        auth = {
            who: logged_in(http, url, email)
            for who, email in (("owner", home.owner), ("other", home.other), ("admin", home.admin))
        }
        yield Api(http, url, home, auth)


# -- one device --------------------------------------------------------------------------------

# A usual day: 23 h x 0.15 kWh + 2.15 kWh at 18:00 = 5.6 kWh. The anomalous day: 12 kWh more
# (3 kW x 4 h), 17.6 kWh. Cost is 0.30 a kWh throughout.
DAY_KWH, ODD_KWH = 5.6, 17.6


def test_summary_of_a_device(api: Api) -> None:
    body = api.ok("/insights/summary", device_id=api.home.meter, at=AT)
    assert (body["device_id"], body["timezone"], body["currency"]) == (
        api.home.meter,
        "Europe/Berlin",
        "EUR",
    )
    assert body["at"] == AT
    # The last 14 full days (22 February to 7 March) are 336 hours: 318 at 150 W, 14 evening
    # hours at 2,150 W, 4 at 3,150 W. The 10th percentile (rank 33.5) is 150 W; 150 W x 8,760 h
    # = 1,314 kWh a year, x 0.30 = 394.20. Those hours used 13 x 5.6 + 17.6 = 90.4 kWh, of which
    # 0.15 kWh x 336 = 50.4 was the baseload: 55.752%.
    assert body["baseload"] == {
        "power_w": 150.0,
        "yearly_kwh": 1314.0,
        "yearly_cost": 394.2,
        "share_pct": pytest.approx(50.4 / 90.4 * 100, abs=1e-3),
        "hours": 336,
    }
    # 1 to 7 March: 6 x 5.6 + 17.6 = 51.2 kWh (15.36); the 8th counts as a day with data (the
    # counter read at its midnight) but no energy, so 8 days.
    assert body["month_to_date"] == {
        "period_start": "2026-03-01",
        "energy_kwh": pytest.approx(51.2),
        "cost": pytest.approx(15.36),
        "days": 8,
    }
    # February: 28 x 5.6 = 156.8 kWh (47.04).
    assert body["last_month"] == {
        "period_start": "2026-02-01",
        "energy_kwh": pytest.approx(156.8),
        "cost": pytest.approx(47.04),
        "days": 28,
    }
    # 1 to 7 March against 1 to 7 February: 51.2 against 7 x 5.6 = 39.2: +30.612%.
    assert body["change_pct"] == pytest.approx((51.2 - 39.2) / 39.2 * 100, abs=1e-3)
    assert body["top_devices"] == [
        {
            "device_id": api.home.meter,
            "name": "meter",
            "energy_kwh": pytest.approx(51.2),
            "cost": pytest.approx(15.36),
            "share_pct": 100.0,
        }
    ]
    # A flat tariff (nothing to shift to), the same 150 W always on in the last 7 days as in
    # the 28 before, and a single device is the whole of what is asked about: nothing to do.
    assert body["recommendations"] == []
    # The test's LLM endpoint (ET_LLM_URL) wrote its text of the facts it was sent.
    assert body["narrative"] == "Always on: 150 W."


def _ewma_level(odd_age: int, end: date = date(2026, 3, 7)) -> tuple[float, float]:
    """By hand: the recent level of 28 days of 5.6 kWh up to `end` but one 17.6 `odd_age` days
    back, with weights halving every 4 days (age 0: `end`), over all days and over working days
    only (the odd day is a Wednesday)."""
    weights = [0.5 ** (age / 4) for age in range(28)]
    working = [w for age, w in enumerate(weights) if (end - timedelta(days=age)).weekday() < 5]
    all_days = DAY_KWH + 12 * weights[odd_age] / sum(weights)
    return all_days, DAY_KWH + 12 * weights[odd_age] / sum(working)


def _day_weights() -> dict[str, float]:
    """By hand: the days' blend weighs the level, the day-kind median and the weekday median by
    their one-day errors over the 56 days before 8 March, to the power -8. The meter's days
    start on Sunday 1 February: the level has a forecast from 2 February (34 days), the
    day-kind median from 3 February (a working day needs one before it; the first Saturday has
    the 1st: 33 days), the weekday median from 8 February (a week back: 28 days). The medians
    say 5.6 every day: wrong only on 4 March (by 12). The level is 5.6 until 4 March (wrong by
    12 too), then above it: on Thursday 5 and Friday 6 March halfway to the working days'
    level, on Saturday 7 March halfway to the weekend's (all 5.6)."""
    e5 = sum(_ewma_level(0, date(2026, 3, 4))) / 2 - DAY_KWH
    e6 = sum(_ewma_level(1, date(2026, 3, 5))) / 2 - DAY_KWH
    e7 = (_ewma_level(2, date(2026, 3, 6))[0] + DAY_KWH) / 2 - DAY_KWH
    raw = {
        "level": ((12 + e5 + e6 + e7) / 34) ** -8,
        "day-kind": (12 / 33) ** -8,
        "weekday": (12 / 28) ** -8,
    }
    return {name: r / sum(raw.values()) for name, r in raw.items()}


def _days_expected() -> tuple[float, float]:
    """The days' forecast of a working day and of a day off: the medians' 5.6, and the level
    (halfway to its kind's) with its weight."""
    level, working = _ewma_level(3)
    w = _day_weights()["level"]
    weekday, weekend = (level + working) / 2, (level + DAY_KWH) / 2
    return DAY_KWH + w * (weekday - DAY_KWH), DAY_KWH + w * (weekend - DAY_KWH)


def test_forecast_of_a_device(api: Api) -> None:
    body = api.ok("/insights/forecast", device_id=api.home.meter, at=AT)
    assert body["method"] == "profile"
    assert set(body["estimators"]["hours"]) == {
        "pooled",
        "last-7-days",
        "day-kind",
        "hour-of-week",
    }
    assert body["estimators"]["days"] == pytest.approx(_day_weights(), abs=1e-3)
    # Hours: every hour of the five weeks before is 0.15 kWh (150 W), 18:00 is 2.15; every
    # estimator's median of the same hour says so (the 3.15s of one morning are one of many).
    # Their errors over four weeks are 0 but for four hours of one day (at most 3 of any hour's
    # 84): the band of 0 holds more errors than an 80 % band's ranks, and the interval is the
    # point.
    hours = body["hours"]
    assert len(hours) == 48
    assert hours[0]["period_start"] == "2026-03-08T12:00:00+01:00"
    assert hours[-1]["period_start"] == "2026-03-10T11:00:00+01:00"
    for h in hours:
        expected = 2.15 if h["period_start"][11:13] == "18" else 0.15
        assert (h["energy_kwh"], h["low"], h["high"]) == pytest.approx((expected,) * 3, abs=1e-6)
    # Days: the medians' 5.6 and the level of the 28 days before today (4 March, the 17.6, is
    # 3 days back) halfway to the level of days of the same kind, blended (`_days_expected`).
    weekday, weekend = _days_expected()
    days = body["days"]
    assert [d["day"] for d in days] == [f"2026-03-{n:02d}" for n in range(9, 16)]
    assert [d["energy_kwh"] for d in days] == pytest.approx([weekday] * 5 + [weekend] * 2)
    for d in days:
        assert d["low"] <= d["energy_kwh"] <= d["high"]
        assert d["cost"] == pytest.approx(d["energy_kwh"] * PRICE)
    # Month: 1 to 7 March so far (six 5.6s and the 17.6; 8 March has no reading before noon);
    # half of today and 23 days left: weekdays 9-13, 16-20, 23-27, 30-31 (17), weekend days
    # 14-15, 21-22, 28-29 (6), today (a Sunday) counts half. The rest is half that level and
    # half the month's rate so far, 51.2 kWh over 7.5 days, for 23.5 days.
    level, working = _ewma_level(3)
    weekday, weekend = (level + working) / 2, (level + DAY_KWH) / 2
    rest_level = 17 * weekday + 6 * weekend + 0.5 * weekend
    expected = 51.2 + 0.5 * rest_level + 0.5 * 51.2 / 7.5 * 23.5
    month = body["month"]
    assert month["period_start"] == "2026-03-01"
    assert month["remaining_days"] == 23.5
    assert "seasonal_factor" not in month
    assert (month["month_to_date_kwh"], month["month_to_date_cost"]) == pytest.approx((51.2, 15.36))
    assert month["energy_kwh"] == pytest.approx(expected, abs=1e-5)
    assert month["energy_kwh_low"] < month["energy_kwh"] < month["energy_kwh_high"]
    # A flat price: the rest at 0.30 a kWh.
    assert month["cost"] == pytest.approx(15.36 + (expected - 51.2) * PRICE, abs=1e-5)


def test_a_public_holiday_of_the_households_country_is_a_day_off(api: Api) -> None:
    """Monday 9 March 2026 is National Heroes and Benefactors Day in Belize: with the
    household's country BZ it is forecast as a day off (as a weekend), the other working days
    as before; without a country, as a working day."""
    headers = api.auth["owner"]
    home = api.http.get(api.url + "/households", headers=headers).json()["items"][0]["id"]
    weekday, weekend = _days_expected()
    try:
        r = api.http.patch(f"{api.url}/households/{home}", json={"country": "BZ"}, headers=headers)
        assert r.status_code == 200, r.text
        days = api.ok("/insights/forecast", device_id=api.home.meter, at=AT)["days"]
        assert [d["energy_kwh"] for d in days[:2]] == pytest.approx([weekend, weekday])
    finally:
        r = api.http.patch(f"{api.url}/households/{home}", json={"country": None}, headers=headers)
        assert r.status_code == 200, r.text
    days = api.ok("/insights/forecast", device_id=api.home.meter, at=AT)["days"]
    assert days[0]["energy_kwh"] == pytest.approx(weekday)


def test_forecast_ignores_what_came_after_at(api: Api) -> None:
    """Half past nine on 4 March: the 3 kW from 10:00 to 14:00 that day is stored, but after
    `at`; the hours still forecast 0.15 kWh, and this month so far is 1 to 3 March and the
    whole hours of the 4th before 09:00-10:00 (which `at` cuts)."""
    body = api.ok("/insights/forecast", device_id=api.home.meter, at="2026-03-04T09:30:00+01:00")
    first = body["hours"][:4]
    assert [h["period_start"][11:16] for h in first] == ["10:00", "11:00", "12:00", "13:00"]
    assert [h["energy_kwh"] for h in first] == pytest.approx([0.15] * 4, abs=1e-6)
    assert body["month"]["month_to_date_kwh"] == pytest.approx(3 * DAY_KWH + 9 * 0.15)


def test_anomalies_of_a_device(api: Api) -> None:
    body = api.ok("/insights/anomalies", device_id=api.home.meter, at=AT)
    assert body["since"] == "2026-02-22"  # 14 days before the 8th
    # The 28 days before 4 March are all 5.6: MAD 0, so the scale is 5% of 5.6 = 0.28 (above
    # the 0.1 kWh floor): (17.6 - 5.6) / 0.28 = 42.857. Every other day is 5.6: score 0.
    assert body["days"] == [
        {
            "day": "2026-03-04",
            "energy_kwh": pytest.approx(ODD_KWH),
            "expected_kwh": pytest.approx(DAY_KWH),
            "score": pytest.approx(12 / 0.28, abs=1e-3),
            "direction": "high",
        }
    ]
    # Events. Its hours 10:00 to 13:00 were 3.15 kWh; over the 28 days before, the hours
    # 09:00 to 14:00 were all 0.15 (highest 0.15, 10th to 90th percentile range 0: the 0.05 kWh
    # floor of the spread). 3.15 is at least 1 kWh above the highest, at hours usually quiet
    # (their 90th percentile 0.15 is within 0.1 kWh of the home's 10th percentile 0.15): usage
    # at an unusual hour, 4 h (too short to be stuck on), each (3.15 - 0.15) / 0.05 = 60
    # spreads above. The 2.15 kWh evenings are usual. Then the readings stop: the last one,
    # at midnight, leaves the hour from 00:00 idle (a counter that did not move), so 11 hours
    # to noon have no data after a week recorded, expected at that week's mean rate: the 168
    # hours from 1 March 01:00 used 6 x 5.6 + 17.6 - 0.15 (1 March 00:00) + 0 (8 March 00:00)
    # = 51.05 kWh; x 11 / 168 = 3.343 kWh; score 11 / 3 = 3.667.
    assert body["events"] == [
        {
            "kind": "unusual_hour",
            "start": "2026-03-04T10:00:00+01:00",
            "end": "2026-03-04T14:00:00+01:00",
            "hours": 4,
            "energy_kwh": pytest.approx(4 * 3.15),
            "expected_kwh": pytest.approx(4 * 0.15),
            "score": pytest.approx(60.0, abs=1e-3),
        },
        {
            "kind": "silence",
            "start": "2026-03-08T01:00:00+01:00",
            "end": "2026-03-08T12:00:00+01:00",
            "hours": 11,
            "energy_kwh": 0.0,
            "expected_kwh": pytest.approx((6 * DAY_KWH + ODD_KWH - 0.15) / 168 * 11, abs=1e-3),
            "score": pytest.approx(11 / 3, abs=1e-3),
        },
    ]


def test_another_zone_counts_its_own_days(api: Api) -> None:
    # In UTC, days start at 01:00 Berlin time: they are summed from quarters, not read from the
    # stored Berlin days. 4 March UTC still holds 09:00-13:00 UTC, the 3 kW hours: 17.6 kWh.
    body = api.ok("/insights/anomalies", device_id=api.home.meter, at=AT, tz="UTC")
    assert body["timezone"] == "UTC"
    assert [(d["day"], d["energy_kwh"]) for d in body["days"]] == [
        ("2026-03-04", pytest.approx(ODD_KWH))
    ]
    assert [(e["kind"], e["start"]) for e in body["events"]] == [
        ("unusual_hour", "2026-03-04T09:00:00+00:00"),
        ("silence", "2026-03-08T00:00:00+00:00"),
    ]


# -- every device ------------------------------------------------------------------------------


def test_summary_of_the_home(api: Api) -> None:
    body = api.ok("/insights/summary", at=AT)
    assert (body["device_id"], body["timezone"]) == (None, "Europe/Berlin")
    # The plug ran at 50 W through 1 to 7 March: 1.2 kWh a day, 8.4 kWh. With the meter's 51.2:
    # 59.6 kWh so far, of which the meter 85.906% and the plug 14.094%.
    assert body["month_to_date"]["energy_kwh"] == pytest.approx(59.6)
    assert [(d["name"], d["energy_kwh"], d["share_pct"]) for d in body["top_devices"]] == [
        ("meter", pytest.approx(51.2), pytest.approx(51.2 / 59.6 * 100, abs=1e-3)),
        ("fridge plug", pytest.approx(8.4), pytest.approx(8.4 / 59.6 * 100, abs=1e-3)),
    ]
    # Over 22 February to 7 March the home never went below 150 W (the plug only added 50 W to
    # March): the 10th percentile stays 150 W, now of 90.4 + 8.4 = 98.8 kWh: 51.012%.
    assert body["baseload"]["power_w"] == 150.0
    assert body["baseload"]["share_pct"] == pytest.approx(50.4 / 98.8 * 100, abs=1e-3)
    # The plug's 50 W from 1 March lifts the always-on level of the last 7 days (1 to 7 March)
    # from the 150 W of the 28 days before to 200 W: 50 W x 24 h x 30 days = 36 kWh a month, at
    # 0.30: 10.80. A flat tariff has no cheaper hour to shift to; the meter's last 14 days
    # (90.4 kWh, 6.457 a day) are 15 % above its days before (5.6): not 20 %; the plug has no
    # days before.
    assert body["recommendations"] == [
        {
            "kind": "always_on",
            "device_id": None,
            "from_hour": None,
            "to_hour": None,
            "amount": pytest.approx(50.0),
            "saving_kwh_per_month": pytest.approx(36.0),
            "saving_per_month": pytest.approx(10.8),
        }
    ]


def test_no_history_gives_empty_answers(api: Api) -> None:
    summary = api.ok("/insights/summary", who="other")
    assert (summary["device_id"], summary["timezone"], summary["currency"]) == (None, "UTC", "EUR")
    assert [summary[k] for k in ("baseload", "month_to_date", "last_month", "change_pct")] == [
        None
    ] * 4
    assert (summary["top_devices"], summary["recommendations"]) == ([], [])
    assert summary["narrative"] == "No history yet."
    forecast = api.ok("/insights/forecast", who="other")
    assert (forecast["month"], forecast["days"], forecast["hours"]) == (None, [], [])
    assert forecast["method"] == "none"
    assert forecast["estimators"] == {"hours": {}, "days": {}}
    anomalies = api.ok("/insights/anomalies", who="other")
    assert (anomalies["days"], anomalies["events"]) == ([], [])


# -- who may see what, and bad input -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/insights/summary", "/insights/forecast", "/insights/anomalies"])
def test_a_device_of_someone_else_is_not_found(api: Api, path: str) -> None:
    r = api.get(path, who="other", device_id=api.home.meter)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["details"] == [
        {"field": "device_id", "message": "not one of your devices"}
    ]
    assert api.get(path, device_id="no-such-device").status_code == 404
    assert api.get(path, who="anonymous").status_code == 401


def test_an_admin_reads_any_device(api: Api) -> None:
    body = api.ok("/insights/summary", who="admin", device_id=api.home.meter, at=AT)
    # The device's zone and its owner's currency and prices, not the admin's.
    assert (body["timezone"], body["currency"]) == ("Europe/Berlin", "EUR")
    assert body["baseload"]["yearly_cost"] == 394.2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"at": "next tuesday"}, "at"),
        ({"at": "2026-03-08T12:00:00"}, "at"),  # no offset
        ({"at": "9" * 20}, "at"),  # epoch ms past any calendar
        ({"at": "99990101"}, "at"),  # 1970, a typo
        # FastAPI's own checks name the query parameter as "query.<name>".
        ({"days": "0"}, "query.days"),
        ({"days": "91"}, "query.days"),
        ({"device_id": "d" * 65}, "query.device_id"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api: Api, params: dict[str, str], field: str) -> None:
    r = api.get("/insights/anomalies", **params)
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["error"]["details"]] == [field]


def test_summary_of_a_metered_home_counts_each_kwh_once(api: Api) -> None:
    # The same buckets, but the meter is now the home's grid meter and the fridge plug sits
    # behind it: the plug's kWh are inside the meter's, so the home used the meter's 51.2 kWh
    # this month, not 59.6. Shares are of those 51.2: the plug 8.4 (16.406 %), and "other", what
    # no plug explains, 51.2 - 8.4 = 42.8 kWh (83.594 %), at 0.30: 12.84.
    owner = api.auth["owner"]
    meter, plug = api.home.meter, api.home.plug
    placed = [
        (meter, {"role": "grid"}),
        (plug, {"role": "sub", "parent_id": meter}),
    ]
    try:
        for device, place in placed:
            r = api.http.patch(f"{api.url}/devices/{device}", json=place, headers=owner)
            assert r.status_code == 200, r.text
        body = api.ok("/insights/summary", at=AT)
        assert body["month_to_date"]["energy_kwh"] == pytest.approx(51.2)
        assert [(d["device_id"], d["energy_kwh"], d["share_pct"]) for d in body["top_devices"]] == [
            (None, pytest.approx(42.8), pytest.approx(42.8 / 51.2 * 100, abs=1e-3)),
            (plug, pytest.approx(8.4), pytest.approx(8.4 / 51.2 * 100, abs=1e-3)),
        ]
        assert body["top_devices"][0]["cost"] == pytest.approx(12.84)
        # The baseload is the meter's alone: 150 W of 22 February to 7 March, 50.4 kWh of the
        # meter's 90.4 (55.752 %), and the plug's 50 W no longer lifts the always-on level (it
        # was inside the meter's all along): no recommendation.
        assert body["baseload"]["power_w"] == 150.0
        assert body["baseload"]["share_pct"] == pytest.approx(50.4 / 90.4 * 100, abs=1e-3)
        assert body["recommendations"] == []
    finally:
        for device, _ in reversed(placed):
            r = api.http.patch(
                f"{api.url}/devices/{device}",
                json={"role": "consumer", "parent_id": None},
                headers=owner,
            )
            assert r.status_code == 200, r.text


# -- several households --------------------------------------------------------------------------

PATHS = ("/insights/summary", "/insights/forecast", "/insights/anomalies")


def _own_household(api: Api, who: str) -> str:
    r = api.http.get(f"{api.url}/households", headers=api.auth[who])
    assert r.status_code == 200, r.text
    return str(r.json()["items"][0]["id"])


def test_without_household_id_each_readable_household_is_reported_on_its_own(api: Api) -> None:
    # "other" (no devices, in UTC) is made a viewer of the owner's Berlin home: with no
    # household_id each report answers both homes, each summed on its own, its own first; the
    # top level stays its own home's, as before there were several.
    owner, home = api.auth["owner"], _own_household(api, "owner")
    own = _own_household(api, "other")
    r = api.http.post(
        f"{api.url}/households/{home}/members",
        json={"email": api.home.other, "role": "viewer"},
        headers=owner,
    )
    assert r.status_code == 201, r.text
    other_id = r.json()["member"]["user_id"]
    try:
        for path in PATHS:
            body = api.ok(path, who="other", at=AT)
            assert [h["household_id"] for h in body["households"]] == [own, home], path
            assert [h["timezone"] for h in body["households"]] == ["UTC", "Europe/Berlin"]
            assert body["households_left_off"] == 0
            # The top level repeats the first (its own, empty: no devices).
            listing = ("households", "households_left_off")
            first = {k: v for k, v in body.items() if k not in listing}
            assert first == body["households"][0]
            assert body["household_id"] == own
            # The owner's home, reported for the viewer exactly as for its owner naming it.
            named = api.ok(path, household_id=home, at=AT)
            assert named["households"] == [body["households"][1]]
        summary = api.ok("/insights/summary", who="other", at=AT)
        assert summary["month_to_date"] is None
        # The Berlin home's March so far: the meter's 51.2 kWh and the plug's 8.4 (as in
        # test_summary_of_the_home), never added to the viewer's own (empty) home.
        assert summary["households"][1]["month_to_date"]["energy_kwh"] == pytest.approx(59.6)
    finally:
        r = api.http.delete(f"{api.url}/households/{home}/members/{other_id}", headers=owner)
        assert r.status_code in (200, 204), r.text


def test_at_most_ten_households_are_reported_the_rest_counted(api: Api) -> None:
    # "other" joins eleven households of new accounts as a viewer: with its own, twelve it may
    # read. One request reports on ten (its own first, then the first nine it joined) and
    # counts the other two in households_left_off; naming one of those reports on it.
    joined = []
    for i in range(11):
        host = signed_up(api.http, api.url, f"host{i}@example.com")
        home = str(api.http.get(f"{api.url}/households", headers=host).json()["items"][0]["id"])
        r = api.http.post(
            f"{api.url}/households/{home}/members",
            json={"email": api.home.other, "role": "viewer"},
            headers=host,
        )
        assert r.status_code == 201, r.text
        joined.append((home, host, r.json()["member"]["user_id"]))
    try:
        body = api.ok("/insights/anomalies", who="other", at=AT)
        ids = [h["household_id"] for h in body["households"]]
        assert ids == [_own_household(api, "other"), *(h for h, _, _ in joined[:9])]
        assert body["households_left_off"] == 2
        last = api.ok("/insights/anomalies", who="other", at=AT, household_id=joined[-1][0])
        assert [h["household_id"] for h in last["households"]] == [joined[-1][0]]
        assert last["households_left_off"] == 0
    finally:
        for home, host, member in joined:
            r = api.http.delete(f"{api.url}/households/{home}/members/{member}", headers=host)
            assert r.status_code in (200, 204), r.text


def test_an_unmetered_home_with_solar_is_priced_on_what_it_exchanged(api: Api) -> None:
    # No grid meter: the "meter" becomes the home's solar (producing its 150 W and more) and the
    # fridge plug (50 W) its only load, with an export price of 0.10. Consumption is the loads:
    # the plug's 8.4 kWh of 1 to 7 March. Every quarter the solar produced more than the plug
    # used, so the home exported solar - plug each quarter: 51.2 - 8.4 = 42.8 kWh at 0.10,
    # a credit of 4.28, and imported nothing: the month so far costs -4.28 (the loads' own cost,
    # 8.4 x 0.30 = 2.52, ignored the export), as GET /usage prices it.
    owner, home = api.auth["owner"], _own_household(api, "owner")
    tariff = {"type": "flat", "price_per_kwh": PRICE, "export_price_per_kwh": 0.10}
    r = api.http.patch(f"{api.url}/households/{home}", json={"tariff": tariff}, headers=owner)
    assert r.status_code == 200, r.text
    r = api.http.patch(
        f"{api.url}/devices/{api.home.meter}", json={"role": "production"}, headers=owner
    )
    assert r.status_code == 200, r.text
    try:
        summary = api.ok("/insights/summary", at=AT)
        assert summary["month_to_date"]["energy_kwh"] == pytest.approx(8.4)
        assert summary["month_to_date"]["cost"] == pytest.approx(-4.28)
        forecast = api.ok("/insights/forecast", at=AT)
        assert forecast["month"]["month_to_date_kwh"] == pytest.approx(8.4)
        assert forecast["month"]["month_to_date_cost"] == pytest.approx(-4.28)
        usage = api.ok("/usage", granularity="month", **{"from": "2026-03-01", "to": "2026-03-08"})
        assert usage["items"][0]["cost"] == pytest.approx(-4.28)
    finally:
        r = api.http.patch(
            f"{api.url}/devices/{api.home.meter}", json={"role": "consumer"}, headers=owner
        )
        assert r.status_code == 200, r.text
        flat = {"type": "flat", "price_per_kwh": PRICE}
        r = api.http.patch(f"{api.url}/households/{home}", json={"tariff": flat}, headers=owner)
        assert r.status_code == 200, r.text
