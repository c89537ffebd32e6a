"""Alerts end to end, with a webhook receiver on loopback: readings over a rule's threshold give
one alert and one signed webhook, readings under its clear threshold resolve it (and notify
once more). Once with everything in one process (`up`), once with `serve alerts` on its own
over Kafka (Tansu) and MariaDB behind the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.alert_receivers import WebhookReceiver
from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, running_up, split_deployment

SECRET = "e2e-webhook-secret"


def alerts_when(
    http: httpx.Client, api: str, auth: dict[str, str], state: str, timeout_s: float = 60.0
) -> list[dict]:
    """The alerts in `state` once there is one (alerting is asynchronous), or the last answer."""
    return items_when(
        http, api + "/alerts", auth, {"state": state}, bool, timeout_s, interval_s=0.2
    )


def run_alerting(base: str) -> None:
    api = base + "/api/v1"
    with WebhookReceiver() as webhook, httpx.Client(timeout=30.0) as http:
        auth = signed_up(http, api)
        device, key = new_device(http, api, auth, type="plug", name="kettle plug")
        rule = {
            "name": "kettle left on",
            "device_id": device,
            "metric": "power_w",
            "threshold": 2000,
            "clear_threshold": 1500,
            "severity": "warning",
            "channels": [{"type": "webhook", "url": webhook.url, "secret": SECRET}],
        }
        r = http.post(api + "/alert-rules", json=rule, headers=auth)
        assert r.status_code == 201, r.text
        rule_id = r.json()["id"]

        # 100 readings over the threshold, 2,500 W to 2,599 W, one a second until a second ago,
        # in two requests.
        now = int(time.time() * 1000)
        over = [
            {"device_id": device, "ts": now - (100 - i) * 1000, "power_w": 2500.0 + i}
            for i in range(100)
        ]
        for part in (over[:50], over[50:]):
            r = http.post(api + "/readings", json={"readings": part}, headers={"X-Device-Key": key})
            assert r.status_code == 202, r.text

        (alert,) = alerts_when(http, api, auth, "firing")
        assert (alert["rule_id"], alert["device_id"], alert["severity"]) == (
            rule_id,
            device,
            "warning",
        )
        (hit,) = webhook.wait_for(1)
        assert hit.signed_by(SECRET), hit.headers
        assert hit.json["event"] == "firing" and hit.json["alert"]["id"] == alert["id"]
        assert hit.headers["x-delivery-id"] == hit.json["delivery_id"]

        # Under the clear threshold: resolved, and notified once more.
        r = http.post(
            api + "/readings",
            json={"device_id": device, "ts": now, "power_w": 1200.0},
            headers={"X-Device-Key": key},
        )
        assert r.status_code == 202, r.text
        (done,) = alerts_when(http, api, auth, "resolved")
        assert done["id"] == alert["id"]
        # The peak is the highest of the 100 readings: 2,599 W; it resolved at 1,200 W.
        assert (done["peak_value"], done["value"]) == (2599.0, 1200.0)
        hits = webhook.wait_for(2)
        assert [h.json["event"] for h in hits] == ["firing", "resolved"]
        assert all(h.signed_by(SECRET) for h in hits)

        time.sleep(1.0)  # a duplicate would have had time to arrive
        assert len(webhook.hits) == 2
        r = http.get(api + "/alerts", headers=auth)
        assert [a["id"] for a in r.json()["items"]] == [alert["id"]]


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path) as proc:
        yield proc


def test_alerts_in_one_process(up_process: ServiceProcess) -> None:
    run_alerting(up_process.url)


@pytest.mark.kafka
@pytest.mark.mysql
def test_alerts_as_a_separate_service(tmp_path: Path, kafka_url: str, mysql_url: str) -> None:
    env = {
        "ET_BUS_URL": kafka_url,
        "ET_DB_URL": mysql_url,
        "ET_JWT_SECRET": "e2e-alerts-secret-that-is-long-enough-0123456789",
    }
    with split_deployment(tmp_path, ("users", "devices", "ingestion", "alerts"), env) as procs:
        run_alerting(procs["gateway"].url)
