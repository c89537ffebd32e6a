"""Personal access tokens through a running `up` process: the README's Home Assistant sensor,
sent as Home Assistant sends it, its template rendered as Home Assistant renders it; a `read`
token on every route of the API; event streams, which end when their token is revoked.

(The token routes' own rules and refusals: tests/service/test_access_tokens.py; across split
processes: tests/e2e/test_split_users_devices.py.)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jinja2
import pytest
import yaml

from energy_tracker.core.authz import ROUTES, Need
from energy_tracker.services.gateway.routes import API_PREFIX
from tests.e2e.accounts import items_when, new_device, post_reading, signed_up
from tests.e2e.test_authorization import OPERATIONS
from tests.processes import ServiceProcess, running_up

README = Path(__file__).parents[2] / "README.md"
GENEROUS = "user=100000/60s,device=100000/60s,anonymous=100000/60s,login=100000/60s"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_up(tmp_path_factory.mktemp("tokens"), ET_RATE_LIMITS=GENEROUS) as proc:
        yield proc


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def new_token(http: httpx.Client, api: str, auth: dict[str, str], scope: str) -> dict[str, Any]:
    r = http.post(api + "/users/me/tokens", json={"name": "t", "scope": scope}, headers=auth)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def readme_sensor() -> dict[str, Any]:
    """The REST sensor of the README's Home Assistant example, as Home Assistant reads it."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL)
    (config,) = [yaml.safe_load(b) for b in blocks if "platform: rest" in b]
    (sensor,) = config["sensor"]
    assert isinstance(sensor, dict)
    return sensor


def a_zone_at_noon() -> tuple[str, timezone]:
    """A fixed-offset zone whose local time is now between 11:00 and 13:00, so that two readings
    early today there are in the past and today, whatever the hour the test runs."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12  # -12 … +11 hours
    # Etc/GMT names count the other way: Etc/GMT-3 is UTC+3.
    name = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"
    return name, timezone(timedelta(hours=offset))


def test_the_readme_home_assistant_sensor_reads_todays_kwh(
    up: ServiceProcess, http: httpx.Client
) -> None:
    api = up.url + API_PREFIX
    zone_name, zone = a_zone_at_noon()
    owner = signed_up(http, api, timezone=zone_name)
    device_id, key = new_device(http, api, owner, name="main meter", type="meter")
    midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    # The meter's counter: 1000 Wh at 00:30 local, 3500 Wh at 01:30. Today's energy is their
    # difference: 3500 - 1000 = 2500 Wh = 2.5 kWh (the first value only starts the count).
    for at, energy_wh in ((timedelta(minutes=30), 1000.0), (timedelta(minutes=90), 3500.0)):
        ts = int((midnight + at).timestamp() * 1000)
        r = post_reading(http, api, key, device_id, ts=ts, energy_wh=energy_wh)
        assert r.status_code == 202, r.text
    items_when(
        http,
        api + "/usage",
        owner,
        {"granularity": "day", "from": "today"},
        lambda items: bool(items) and items[0]["energy_kwh"] == 2.5,
    )
    token = new_token(http, api, owner, "read")["token"]

    sensor = readme_sensor()
    assert sensor["platform"] == "rest"
    assert (sensor["unit_of_measurement"], sensor["device_class"], sensor["state_class"]) == (
        "kWh",
        "energy",
        "total_increasing",
    )
    resource = sensor["resource"].replace("http://energy.local:8080", up.url)
    assert resource.startswith(up.url + API_PREFIX + "/")
    headers = {k: v.replace("etp_…", token) for k, v in sensor["headers"].items()}
    assert headers == {"Authorization": f"Bearer {token}"}
    r = http.get(resource, headers=headers)  # what Home Assistant sends every scan_interval
    assert r.status_code == 200, r.text
    (today,) = r.json()["items"]  # the path value_template reads
    assert datetime.fromisoformat(today["period_start"]) == midnight
    assert today["energy_kwh"] == 2.5
    state = jinja2.Environment().from_string(sensor["value_template"]).render(value_json=r.json())
    assert float(state) == 2.5


@pytest.fixture(scope="module")
def reader(up: ServiceProcess) -> dict[str, Any]:
    """An account with a device and a read token: {auth, token, device_id, key}."""
    api = up.url + API_PREFIX
    with httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        device_id, key = new_device(http, api, auth)
        return {
            "auth": auth,
            "token": {"Authorization": f"Bearer {new_token(http, api, auth, 'read')['token']}"},
            "device_id": device_id,
            "key": key,
        }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op[0]} {op[1]}")
def test_a_read_token_on_every_route(
    up: ServiceProcess, http: httpx.Client, reader: dict[str, Any], operation: tuple[str, str]
) -> None:
    """What the one authorization table (core.authz.ROUTES) says, the running API does: a read
    token is accepted everywhere a user is, and refused (403) whatever changes something and
    what needs a password sign-in or an admin."""
    method, template = operation
    rule = ROUTES[operation]
    ids: defaultdict[str, str] = defaultdict(lambda: "x", device_id=reader["device_id"])
    url = up.url + API_PREFIX + template.format_map(ids)
    with http.stream(method, url, headers=reader["token"]) as r:
        status = r.status_code
        body = "" if r.headers.get("content-type", "").startswith("text/event-stream") else r.read()
    if rule.need is Need.PUBLIC:
        return  # answered as for anyone (the authorization matrix has them)
    assert status != 401, body
    if rule.changes or rule.need in (Need.SESSION, Need.ADMIN):
        assert status == 403, body
    else:
        assert status != 403, body


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The events of a stream, each as its fields (`event`, `data`, `id`)."""
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = value


def test_streams_take_a_read_token_and_end_when_it_is_revoked(
    up: ServiceProcess, http: httpx.Client
) -> None:
    api = up.url + API_PREFIX
    owner = signed_up(http, api)
    device_id, key = new_device(http, api, owner)
    made = new_token(http, api, owner, "read")
    token = {"Authorization": f"Bearer {made['token']}"}
    assert post_reading(http, api, key, device_id, power_w=321.0).status_code == 202
    with (
        http.stream("GET", api + f"/devices/{device_id}/live", headers=token) as live,
        http.stream("GET", api + "/alerts/stream", headers=token) as alerts,
    ):
        assert (live.status_code, alerts.status_code) == (200, 200)
        lines = live.iter_lines()
        first = next(e for e in sse_events(lines) if e.get("event") == "reading")
        assert '"power_w":321.0' in first["data"]

        r = http.delete(api + f"/users/me/tokens/{made['id']}", headers=owner)
        assert r.status_code == 204, r.text
        # Both streams end by themselves (a stream that did not would hit the client's 30 s
        # read timeout and fail the test); the same process revoked it, so they end at once.
        rest = list(lines)
        assert all(not line.startswith("event: reading") for line in rest)
        list(alerts.iter_lines())
    r = http.get(api + f"/devices/{device_id}/live", headers=token)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
