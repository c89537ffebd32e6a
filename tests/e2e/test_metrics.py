"""What `/metrics` counts for the dashboard, seen from outside a real process: readings accepted
and refused by reason (ingestion), and requests by route template (every service)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.accounts import new_device, signed_up
from tests.processes import running_up


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_readings_are_counted_accepted_or_refused_by_reason(tmp_path: Path) -> None:
    with running_up(tmp_path) as up, httpx.Client(timeout=30.0) as http:
        api = up.url + "/api/v1"
        auth = signed_up(http, api)
        device_id, key = new_device(http, api, auth)
        headers = {"X-Device-Key": key}
        now = int(time.time() * 1000)
        good = [{"ts": now - 2000, "power_w": 5.0}, {"ts": now - 1000, "power_w": 6.0}]
        assert http.post(api + "/readings", json={"readings": good}, headers=headers).is_success
        # One reading an hour ahead refuses its whole batch of three.
        mixed = [*good, {"ts": now + 3_600_000, "power_w": 7.0}]
        r = http.post(api + "/readings", json={"readings": mixed}, headers=headers)
        assert r.status_code == 422
        r = http.post(api + "/readings", content=b"{not json", headers=headers)
        assert r.status_code == 400

        accepted = samples(up.url, "et_readings_accepted_total")
        refused = samples(up.url, "et_readings_refused_total")
        requests = samples(up.url, "et_http_request_duration_seconds_count")

    assert accepted == {(("transport", "http"),): 2.0}
    assert refused == {
        (("reason", "future"), ("transport", "http")): 1.0,
        (("reason", "batch_refused"), ("transport", "http")): 2.0,
        (("reason", "schema"), ("transport", "http")): 1.0,
    }
    posted = {labels: n for labels, n in requests.items() if ("route", "/readings") in labels}
    assert {dict(labels)["status"]: n for labels, n in posted.items()} == {
        "202": 1.0,
        "422": 1.0,
        "400": 1.0,
    }
    assert not any(device_id in dict(labels)["route"] for labels in requests)
