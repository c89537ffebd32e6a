"""How fast the web dashboard is (issue 11), measured in Debian's Chromium with Playwright:

- first load: the compressed JS and CSS the home page loads (as the server sends them, gzip);
- chart draw: a device's live chart with 8,760 points (a year of hours' worth) from the
  construction of its uPlot chart to the next frame (the page's `chart-draw` measure);
- interactive: from navigation to the home page showing every number (its `home-ready` mark),
  against the cached 10M-reading query store of `make bench` (benchmarks/.cache) when it has
  been built, else against one simulated home with a week of one-minute history (said so).

Each timing is the median of REPS page loads. Results go to benchmarks/results/dashboard.json
and, with --readme, into README.md between the bench-web markers. Run: `make bench-web`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deploy
import httpx
import orjson
import query_store
from playwright.sync_api import sync_playwright

from energy_tracker.services.gateway.dashboard import DASHBOARD_DIR, load_assets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.browser
from tests.browser import CHROMIUM, launch

from energy_tracker.simulator.driver import PASSWORD, email_of
from energy_tracker.simulator.homes import make_homes

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results" / "dashboard.json"
REPS = 5
POINTS = 8_760
SEED = 11


def first_load_kb() -> dict[str, float]:
    """gzip bytes of the JS and CSS index.html names, as the server sends them."""
    assets = load_assets(DASHBOARD_DIR)
    index = assets["/index.html"].body.decode()
    named = re.findall(r'(?:src|href)="(/assets/[^"]+\.(?:js|css))"', index)
    sizes = {url: len(assets[url].gzipped or assets[url].body) for url in named}
    return {
        "js_kb": round(sum(v for k, v in sizes.items() if k.endswith(".js")) / 1024, 1),
        "css_kb": round(sum(v for k, v in sizes.items() if k.endswith(".css")) / 1024, 1),
    }


def post_points(api: str, token: str) -> str:
    """A new device with POINTS readings over the last 50 minutes (all still in the live
    chart's hour while the benchmark runs); its id."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=60) as http:
        device = http.post(api + "/devices", json={"name": "8760", "type": "plug"}, headers=auth)
        device_id = device.json()["id"]
        now = int(time.time() * 1000)
        step = 3_000_000 // POINTS
        readings = [
            {"device_id": device_id, "ts": now - (POINTS - i) * step, "power_w": 500 + i % 700}
            for i in range(POINTS)
        ]
        r = http.post(api + "/readings", json={"readings": readings}, headers=auth)
        r.raise_for_status()
        for _ in range(300):  # until the usage service has stored every one
            page = http.get(f"{api}/devices/{device_id}/readings?limit=10000", headers=auth).json()
            if len(page["items"]) >= POINTS:
                break
            time.sleep(0.2)
    return device_id


def measure(base: str, email: str) -> dict[str, Any]:
    api = base + "/api/v1"
    with httpx.Client(timeout=60) as http:
        token = http.post(api + "/auth/login", json={"email": email, "password": PASSWORD}).json()[
            "access_token"
        ]
    device_id = post_points(api, token)
    with sync_playwright() as pw:
        browser = launch(pw)
        # bypass_csp: the waits below evaluate script strings, which the page's CSP forbids
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(base + "/#/signin")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Power now").wait_for()
        page.close()

        def load(url: str, waited: str) -> Any:
            """A fresh tab navigated to `url` (the session cookie signs it in), once `waited`."""
            tab = context.new_page()
            tab.goto(url)
            tab.wait_for_function(waited, timeout=60_000)
            return tab

        ready = []
        for _ in range(REPS):
            tab = load(base + "/#/", "performance.getEntriesByName('home-ready').length > 0")
            ready.append(tab.evaluate("performance.getEntriesByName('home-ready')[0].startTime"))
            tab.close()
        drawn = (
            f"performance.getEntriesByName('chart-draw').find(m => m.detail.points === {POINTS})"
        )
        draws = []
        for _ in range(REPS):
            tab = load(f"{base}/#/devices/{device_id}", f"!!{drawn}")
            draws.append(tab.evaluate(f"{drawn}.duration"))
            tab.close()
        browser.close()
    return {
        "interactive_ms": round(statistics.median(ready)),
        "chart_8760_ms": round(statistics.median(draws), 1),
    }


def simulated_home(workdir: Path, base: str) -> str:
    """One simulated home with a week of history; its account's e-mail."""
    cmd = [sys.executable, "-m", "energy_tracker.cli", "simulate", "--homes", "1", "--seed"]
    cmd += [str(SEED), "--backfill", "--days", "7", "--interval", "60s", "--duration", "0"]
    subprocess.run([*cmd, "--url", base], check=True, capture_output=True, timeout=900)
    return email_of(make_homes(SEED, 1)[0])


def write_readme(result: dict[str, Any]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    table = "\n".join(
        [
            "<!-- bench-web:start -->",
            "| dashboard | measured | goal |",
            "|---|---:|---:|",
            f"| first load, compressed JS + CSS, KB | {result['js_kb'] + result['css_kb']:.1f}"
            f" (JS {result['js_kb']}, CSS {result['css_kb']}) | ≤ 300 |",
            f"| live chart of 8,760 points drawn, ms | {result['chart_8760_ms']} | < 200 |",
            f"| home page interactive, ms | {result['interactive_ms']} | < 1,000 |",
            f"| … on a store of, readings | {result['store']} | 10M |",
            "",
            f"Chromium {result['chromium']}, headless; median of {REPS} loads; {result['at']};"
            f" load average {result['load_average']} at the start (2 shared cores).",
            "<!-- bench-web:end -->",
        ]
    )
    text = re.sub(r"<!-- bench-web:start -->.*<!-- bench-web:end -->", table, text, flags=re.S)
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the README's table")
    parser.add_argument("--readings", type=int, default=10_000_000, help="query store size")
    args = parser.parse_args()
    if not (DASHBOARD_DIR / "index.html").is_file():
        raise SystemExit("the dashboard is not built: make web")
    result: dict[str, Any] = first_load_kb()
    result["load_average"] = round(os.getloadavg()[0], 2)  # the cores are shared
    manifest = query_store.load_manifest(
        query_store.manifest_path(CACHE, "embedded", args.readings)
    )
    secret = deploy.new_secret()
    keep = {"retention_days": "1000000"}
    with tempfile.TemporaryDirectory() as tmp:
        if manifest is not None and manifest.data_dir:
            with deploy.embedded(Path(manifest.data_dir), secret, **keep) as deployment:
                result |= measure(deployment.gateway_url, manifest.homes[0]["email"])
            result["store"] = f"{manifest.readings:,}"
        else:
            with deploy.embedded(Path(tmp), secret, **keep) as deployment:
                email = simulated_home(Path(tmp), deployment.gateway_url)
                result |= measure(deployment.gateway_url, email)
            result["store"] = "one simulated home, 7 days (no 10M query store built)"
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True).stdout
    result["chromium"] = version.split()[1] if version else "?"
    result["at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.readme:
        write_readme(result)


if __name__ == "__main__":
    main()
