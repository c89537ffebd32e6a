"""The compose deployment, tested from outside (`make compose-test`, scripts/compose-test/run.sh,
which builds and starts compose.yaml with compose.test.yaml and sets the ET_COMPOSE_* variables;
without them these tests are skipped: they need the Docker engine that script starts).

In order: the thin slice through the gateway with an alert webhook to a receiver container; one
usage replica killed (SIGKILL) mid-stream and the other taking its partitions with nothing lost
or counted twice; Prometheus scraping every replica of every service and answering every query
of the Grafana dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.accounts import items_when, new_device, signed_up

GATEWAY = os.environ.get("ET_COMPOSE_GATEWAY_URL", "")
pytestmark = pytest.mark.skipif(
    not GATEWAY, reason="compose leg: run by `make compose-test` (needs its Docker engine)"
)
API = GATEWAY + "/api/v1"
PROMETHEUS = os.environ.get("ET_COMPOSE_PROMETHEUS_URL", "")
RECEIVER = os.environ.get("ET_COMPOSE_RECEIVER_URL", "")
DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/energy-tracker.json"
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SECRET = "compose-webhook-secret"
# Every replica compose.yaml starts, as Prometheus should find them.
REPLICAS = {
    "gateway": 1,
    "users": 1,
    "devices": 1,
    "ingestion": 1,
    "usage": 2,
    "alerts": 2,
    "insights": 1,
}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    """`check()`'s first truthy answer, polling; fails naming `what` and the last answer."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout_s:g} s (last: {last!r})")


def docker(*args: str) -> str:
    out = subprocess.run(
        [os.environ["ET_DOCKER"], *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def containers(service: str) -> list[str]:
    """Ids of the running containers of a compose service, in a stable order."""
    ids = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={os.environ['ET_COMPOSE_PROJECT']}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    )
    return sorted(ids.split())


def compose(*args: str) -> str:
    cmd = [*shlex.split(os.environ["ET_COMPOSE_CMD"]), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def figure(line: str) -> None:
    """A measured figure for run.sh to print at the end (and the README to quote)."""
    with open(os.environ["ET_COMPOSE_FIGURES"], "a") as out:
        out.write(line + "\n")


def promql(query: str) -> list[dict[str, Any]]:
    r = httpx.get(PROMETHEUS + "/api/v1/query", params={"query": query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def hour_usage(
    http: httpx.Client, auth: dict[str, str], device_id: str, hour: int, kwh: float
) -> list[dict[str, Any]]:
    """The device's bucket of `hour` once its energy is `kwh` (the closing reading, the next
    hour's first, may come in a later message than the others), or as last seen after 120 s."""
    params = {"granularity": "hour", "from": str(hour), "to": str(hour + HOUR_MS)}
    return items_when(
        http,
        API + f"/devices/{device_id}/usage",
        auth,
        params,
        lambda i: bool(i) and i[0]["energy_kwh"] == pytest.approx(kwh, abs=1e-9),
        timeout_s=120,
    )


def test_the_thin_slice_through_the_gateway_with_a_signed_webhook(http: httpx.Client) -> None:
    auth = signed_up(http, API)
    device_id, key = new_device(http, API, auth, name="kettle plug", type="plug")

    # 1,200 W every minute over one whole UTC hour three hours ago, the closing sample
    # included: 1.2 kW x 1 h = 1.200 kWh, from 60 one-minute segments.
    hour = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS
    readings = [{"ts": hour + m * MINUTE_MS, "power_w": 1200.0} for m in range(61)]
    r = http.post(API + "/readings", json={"readings": readings}, headers={"X-Device-Key": key})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 61}
    # A reading from the future is refused whole, and counted by its reason (the dashboard).
    future = {"ts": int(time.time() * 1000) + HOUR_MS, "power_w": 5.0}
    r = http.post(API + "/readings", json=future, headers={"X-Device-Key": key})
    assert r.status_code == 422, r.text

    (bucket,) = hour_usage(http, auth, device_id, hour, kwh=1.2)
    assert bucket["samples"] == 60
    assert bucket["energy_kwh"] == pytest.approx(1.200, abs=1e-9)

    # A rule over 2,000 W whose webhook goes to the receiver container, by its compose name.
    rule = {
        "name": "kettle left on",
        "device_id": device_id,
        "metric": "power_w",
        "threshold": 2000,
        "severity": "warning",
        "channels": [{"type": "webhook", "url": "http://receiver:8000/hook", "secret": SECRET}],
    }
    r = http.post(API + "/alert-rules", json=rule, headers=auth)
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    now = int(time.time() * 1000)
    over = [{"ts": now - (10 - i) * 1000, "power_w": 2500.0} for i in range(10)]
    r = http.post(API + "/readings", json={"readings": over}, headers={"X-Device-Key": key})
    assert r.status_code == 202, r.text

    alerts = items_when(http, API + "/alerts", auth, {"state": "firing"}, bool, timeout_s=60)
    (alert,) = alerts
    assert (alert["rule_id"], alert["device_id"]) == (rule_id, device_id)

    def hooks() -> list[dict[str, Any]]:
        return [h for h in httpx.get(RECEIVER, timeout=5).json() if alert["id"] in h["body"]]

    (hook,) = wait_for("the webhook at the receiver", hooks, timeout_s=60)
    body = hook["body"].encode()
    headers = {k.lower(): v for k, v in hook["headers"].items()}
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-signature"], expected)
    payload = json.loads(body)
    assert payload["event"] == "firing" and payload["alert"]["id"] == alert["id"]
    assert headers["x-delivery-id"] == payload["delivery_id"]


def test_the_gateway_serves_the_dashboard_built_in_the_image(http: httpx.Client) -> None:
    """The image's web stage built the dashboard (no `make web` on the host: the build context
    leaves a host-built one out): `/` is its page, and every script and style it names is
    served, content-hashed and cached for a year."""
    page = http.get(GATEWAY + "/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+\.(?:js|css))"', page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for url in assets:
        r = http.get(GATEWAY + url)
        assert r.status_code == 200, url
        assert r.content, url
        assert "immutable" in r.headers["cache-control"], url


def test_services_log_json_lines_carrying_the_request_id(http: httpx.Client) -> None:
    rid = f"compose-{uuid.uuid4().hex}"
    r = http.post(
        API + "/auth/login",
        json={"email": "nobody@example.com", "password": "not the password"},
        headers={"X-Request-Id": rid},
    )
    assert r.status_code == 401 and r.headers["x-request-id"] == rid
    for service in ("gateway", "users"):
        (container,) = containers(service)

        def lines(container: str = container) -> list[dict[str, Any]]:
            logged = subprocess.run(
                [os.environ["ET_DOCKER"], "logs", container], capture_output=True, text=True
            )
            text = logged.stdout + logged.stderr
            return [json.loads(line) for line in text.splitlines() if rid in line]

        found = wait_for(f"{service} logging the request", lines, timeout_s=10)
        assert all(line["request_id"] == rid for line in found), found
        assert any(line["logger"] == "energy_tracker.access" for line in found), found


def test_a_killed_usage_replica_hands_its_partitions_over_losing_nothing(
    http: httpx.Client,
) -> None:
    auth = signed_up(http, API)
    devices = [new_device(http, API, auth, name=f"meter {i}")[0] for i in range(16)]
    # Each device: 61 readings a minute apart over one UTC hour four hours ago, 600 W on even
    # minutes and 1,800 W on odd ones. Every one-minute segment averages (600 + 1,800) / 2 =
    # 1,200 W, so the hour is 1.200 kWh from 60 segments; a lost reading would turn two
    # segments into one flat one at 600 or 1,800 W and change it, a reading counted twice
    # would add a sample.
    hour = (int(time.time() * 1000) // HOUR_MS - 4) * HOUR_MS
    usage = containers("usage")
    assert len(usage) == 2, usage
    victim = usage[0]
    try:
        for minute in range(61):
            power = 600.0 if minute % 2 == 0 else 1800.0
            batch = [
                {"device_id": d, "ts": hour + minute * MINUTE_MS, "power_w": power} for d in devices
            ]
            r = http.post(API + "/readings", json={"readings": batch}, headers=auth)
            assert r.status_code == 202, r.text
            if minute == 20:
                docker("kill", "-s", "KILL", victim)
                killed_at = time.monotonic()
            time.sleep(0.05)

        # The survivor now owns every partition of energy-readings in group usage.
        lag = 'count by (instance) (et_consumer_lag{group="usage",topic="energy-readings"})'
        owners = wait_for(
            "one usage replica owning all 8 partitions",
            lambda: [s for s in promql(lag) if s["value"][1] == "8"],
        )
        assert len(owners) == 1
        took = time.monotonic() - killed_at
        figure(f"usage replica killed: the other owned all 8 partitions {took:.0f} s later")
        for device_id in devices:
            (bucket,) = hour_usage(http, auth, device_id, hour, kwh=1.2)
            assert (bucket["samples"], bucket["energy_kwh"]) == (60, pytest.approx(1.2, abs=1e-9))
            assert bucket["max_power_w"] == 1800.0
        took = time.monotonic() - killed_at
        figure(f"every hour of the 16 devices (976 readings) exact {took:.0f} s after the kill")
    finally:
        # Back to two replicas for what follows; the one restarted rejoins the group.
        docker("start", victim)
        wait_for(
            "the restarted usage replica healthy",
            lambda: docker("inspect", "-f", "{{.State.Health.Status}}", victim) == "healthy",
            timeout_s=180,
        )


def test_the_one_box_container_runs_up_unprivileged_on_its_volume() -> None:
    """`docker run -v DATA:/data energy-tracker up`: every service in one container, healthy by
    the image's own HEALTHCHECK, as uid 10001, its embedded stores on the volume."""
    name = f"et-one-box-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-v", f"{name}:/data", "energy-tracker:latest", "up")
    try:
        wait_for(
            "the one-box container healthy",
            lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name) == "healthy",
            timeout_s=120,
        )
        assert docker("exec", name, "id", "-u") == "10001"
        stored = set(docker("exec", name, "ls", "/data").split())
        assert {"bus.db", "meta.db", "series.db"} <= stored
    finally:
        docker("rm", "-f", name)
        docker("volume", "rm", name)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_prometheus_scrapes_every_replica_of_every_service() -> None:
    def targets() -> dict[str, list[str]]:
        r = httpx.get(PROMETHEUS + "/api/v1/targets", timeout=10)
        found: dict[str, list[str]] = {}
        for t in r.json()["data"]["activeTargets"]:
            found.setdefault(t["labels"]["service"], []).append(t["health"])
        return found

    def all_up() -> dict[str, list[str]] | None:
        found = targets()
        ok = {s: len(found.get(s, [])) == n for s, n in REPLICAS.items()}
        healthy = all(h == "up" for hs in found.values() for h in hs)
        return found if all(ok.values()) and healthy else None

    wait_for("every replica a target, and up", all_up, timeout_s=60)


@pytest.mark.parametrize(("title", "expr"), dashboard_queries() if DASHBOARD.exists() else [])
def test_every_query_of_the_grafana_dashboard_has_data(title: str, expr: str) -> None:
    assert "$" not in expr, f"{title}: Grafana variables cannot be checked here"
    wait_for(f"data for {title!r}: {expr}", lambda: promql(expr), timeout_s=30)
