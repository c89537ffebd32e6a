"""The web dashboard end to end: Debian's Chromium, driven by Playwright, against a real `up`
process. One household's journey, at a desktop and at a phone viewport: register, set the
tariff, add a device, send readings over HTTP with its key and watch the page follow, read the
hour / day / month numbers against values worked out by hand (a 25-hour DST day included) and
the chart's time axis in 24-hour local time, create a rule with a webhook and see its alert
arrive live, acknowledge it and open its notification attempts, edit the rule and watch its
preview follow the threshold, change the tariff and see the cost follow, sign out and back in.
Every page is checked with axe-core (from web/node_modules) and photographed into
test-artifacts/dashboard/.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.alert_receivers import WebhookReceiver
from tests.backends import IN_CI
from tests.browser import CHROMIUM, launch
from tests.e2e.accounts import items_when
from tests.processes import ServiceProcess, embedded_env, run_command, running_up

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
DASHBOARD = ROOT / "src" / "energy_tracker" / "dashboard" / "index.html"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "a long enough password"
BERLIN = ZoneInfo("Europe/Berlin")
TIMEOUT_MS = 20_000
HOOK_SECRET = "a webhook secret"
# Every text drawn on a canvas, with the caption of the chart drawn in: uPlot draws its axes on
# a canvas, out of the DOM's reach, so the test reads them where they are drawn.
RECORD_DRAWN_TEXT = """
window.__drawn = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
  const figure = this.canvas.closest("figure");
  const caption = figure?.querySelector("figcaption")?.textContent ?? "";
  if (window.__drawn.length < 20000) window.__drawn.push([caption, String(text)]);
  return fillText.call(this, text, ...rest);
};
"""

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=TIMEOUT_MS)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"browser leg: {what}, and CI=true requires it")
    pytest.skip(f"browser leg skipped: {what}")


@pytest.fixture(scope="module")
def home_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the `up` process keeps its data (create-admin works on it too)."""
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def server(home_dir: Path) -> Iterator[ServiceProcess]:
    for path, what in (
        (CHROMIUM, "no /usr/bin/chromium"),
        (AXE, "no axe-core in web/node_modules"),
        (DASHBOARD, "the dashboard is not built (make web)"),
    ):
        if not path.exists():
            _missing(what)
    with running_up(home_dir) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


def check_page(page: Any, name: str) -> None:
    """axe-core on the page as it is: no serious or critical violation; then a screenshot."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: {serious}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def post(api: str, key: str, device: str, readings: list[tuple[int, float]]) -> None:
    body = {"readings": [{"device_id": device, "ts": ts, "power_w": w} for ts, w in readings]}
    for start in range(0, len(body["readings"]), 5000):
        part = {"readings": body["readings"][start : start + 5000]}
        r = httpx.post(api + "/readings", json=part, headers={"X-Device-Key": key}, timeout=30)
        assert r.status_code == 202, r.text


def steady(day_start: datetime, day_end: datetime, watts: float) -> list[tuple[int, float]]:
    """A reading every 5 minutes of real time (not of wall-clock time, which would skip the
    repeated hour of a DST day) from `day_start` to `day_end`, both included, at `watts`."""
    start, end = int(day_start.timestamp() * 1000), int(day_end.timestamp() * 1000)
    return [(ts, watts) for ts in range(start, end + 1, 300_000)]


def sign_in(page: Any, server: ServiceProcess, email: str, password: str) -> None:
    page.goto(server.url + "/#/signin")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def rows(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{table} tbody tr",
        "trs => trs.map(tr => [...tr.children].map(c => c.textContent.trim()))",
    )


def drawn_text(page: Any, caption: str) -> list[str]:
    """What was drawn on the canvas of the charts whose caption starts with `caption`, once
    something was."""
    page.wait_for_function("c => window.__drawn.some(([cap]) => cap.startsWith(c))", arg=caption)
    return page.evaluate(
        "c => window.__drawn.filter(([cap]) => cap.startsWith(c)).map(([, text]) => text)",
        caption,
    )


def journey(server: ServiceProcess, browser: Any, viewport: dict[str, int], tag: str) -> None:
    with WebhookReceiver() as receiver:
        walk(server, browser, viewport, tag, receiver)


def walk(
    server: ServiceProcess,
    browser: Any,
    viewport: dict[str, int],
    tag: str,
    receiver: WebhookReceiver,
) -> None:
    api = server.url + "/api/v1"
    email = f"{tag}-{uuid.uuid4().hex[:8]}@example.com"
    context = browser.new_context(viewport=viewport, bypass_csp=True)  # bypass: to inject axe
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(RECORD_DRAWN_TEXT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # -- register -------------------------------------------------------------------------
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check_page(page, f"{tag}-signin")
    page.get_by_role("link", name="No account yet? Create one").click()
    page.get_by_label("Name (optional)").fill("Ada")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    check_page(page, f"{tag}-register")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="No devices yet")).to_be_visible()
    check_page(page, f"{tag}-home-empty")

    # -- settings: Berlin, EUR, a flat 0.30 / kWh ----------------------------------------------
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    page.get_by_label("Currency").fill("EUR")
    page.get_by_label("Tariff type").select_option("flat")
    page.get_by_label("Price per kWh (EUR)", exact=True).fill("0.30")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    page.get_by_label("Tariff type").select_option("tou")
    check_page(page, f"{tag}-settings")
    page.get_by_label("Tariff type").select_option("flat")

    # -- add a device: its key is shown once, with examples --------------------------------
    page.get_by_role("link", name="Home").click()
    page.get_by_label("Name", exact=True).fill("kettle plug")
    page.get_by_role("button", name="Add device").click()
    key_block = page.get_by_label("Device key", exact=True)
    expect(key_block).to_be_visible()
    key = key_block.inner_text().strip()
    assert key.startswith("etk_")
    curl = page.get_by_label("Send a reading with curl").inner_text()
    found = re.search(r'"device_id":"([^"]+)"', curl)
    assert found is not None, curl
    device = found[1]
    check_page(page, f"{tag}-device-added")

    # -- history: the 25-hour day of 2026-10-25 in Berlin at a steady 1,000 W ------------------
    # Worked out by hand: 1 kWh in each of its 25 hours, 25 kWh that day and that month, at
    # 0.30 EUR: 0.30 an hour, 7.50 the day.
    post(
        api,
        key,
        device,
        steady(datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN), 1000),
    )

    # -- home follows live: 2,000 W for 3 minutes = 0.100 kWh, 0.03 EUR ---------------------
    page.get_by_role("button", name="Done: show my home").click()
    expect(page.get_by_role("heading", name="Power now")).to_be_visible()
    now = int(time.time() * 1000)
    post(api, key, device, [(now - 180_000, 2000.0), (now - 90_000, 2000.0), (now, 2000.0)])
    expect(page.locator("#total-power")).to_have_text("2,000 W")
    expect(page.get_by_test_id("today-kwh")).to_have_text("0.100 kWh")
    expect(page.get_by_test_id("today-cost")).to_have_text("€0.03")
    check_page(page, f"{tag}-home")

    # -- the device: live chart, hour / day / month against the hand-worked values -------------
    page.get_by_role("link", name="kettle plug").first.click()
    expect(page.get_by_role("heading", name="Live power")).to_be_visible()
    expect(page.locator(".chart-summary").first).to_contain_text("latest 2000 W")
    page.evaluate("window.__drawn.length = 0")
    page.get_by_label("Period containing").fill("2026-10-25")
    page.get_by_label("Period containing").dispatch_event("change")
    expect(page.locator(".usage-table caption")).to_have_text("Usage by hour (Europe/Berlin)")
    expect(page.locator(".usage-table tbody tr")).to_have_count(25)
    hours = rows(page, ".usage-table")
    # 02:00 twice: in summer time, then in winter time.
    assert [r[0] for r in hours[1:5]] == [
        "01:00 GMT+2",
        "02:00 GMT+2",
        "02:00 GMT+1",
        "03:00 GMT+1",
    ]
    assert {(r[1], r[2]) for r in hours} == {("1.000", "0.30")}
    # Its time axis: 24-hour Berlin time from the day's midnight (uPlot's own default would
    # say "12am", "3pm"), dates day first ("25 Oct", not "10/25"). At a phone's width the
    # ticks are a day apart: dates only.
    axis = drawn_text(page, "Energy by hour")
    times = [t for t in axis if re.fullmatch(r"\d{1,2}:\d{2}", t)]
    assert all(re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", t) for t in times), axis
    assert not [t for t in axis if re.search(r"\d\s*(am|pm)\b", t, re.IGNORECASE)], axis
    assert [t for t in axis if re.fullmatch(r"2[56] Oct( 2026)?", t)], axis
    assert not [t for t in axis if re.search(r"\b10/2[56]\b", t)], axis
    if viewport["width"] >= 1000:  # room for a tick every few hours, an afternoon one too
        assert "00:00" in times, axis
        assert [t for t in times if int(t[:2]) >= 13], axis
    expect(page.get_by_test_id("compare")).to_contain_text("2026-10-25: 25.000 kWh (€7.50)")
    check_page(page, f"{tag}-device-hours")
    page.locator(".chart").nth(1).screenshot(path=str(ARTIFACTS / f"{tag}-dst-day-chart.png"))
    page.get_by_role("button", name="By day").click()
    expect(page.locator(".usage-table caption")).to_have_text("Usage by day (Europe/Berlin)")
    # The closing reading at midnight opens the 26th, with nothing in it yet.
    days = [r[:3] for r in rows(page, ".usage-table")]
    assert days == [["25 Oct", "25.000", "7.50"], ["26 Oct", "0.000", "0.00"]]
    page.get_by_role("button", name="By month").click()
    expect(page.locator(".usage-table caption")).to_have_text("Usage by month (Europe/Berlin)")
    months = {r[0]: r[1:3] for r in rows(page, ".usage-table")}
    assert months["Oct 2026"] == ["25.000", "7.50"]
    assert months["Nov 2026"] == ["0.100", "0.03"]
    check_page(page, f"{tag}-device-months")

    # -- a rule, its preview, its alert arriving live, acknowledged -----------------------------
    page.get_by_role("link", name="Alerts").click()
    page.get_by_label("Name", exact=True).fill("kettle left on")
    page.get_by_label("Threshold").fill("2500")
    page.get_by_label("Clear at (hysteresis)").fill("2200")
    page.get_by_role("button", name="Add a channel").click()
    page.get_by_label("URL or address").fill(receiver.url)
    page.get_by_label("Webhook secret (signs each body)").fill(HOOK_SECRET)
    page.get_by_role("button", name="Preview").click()
    # The last 7 days: three readings at 2,000 W, under the threshold: no alert.
    expect(page.get_by_test_id("preview")).to_have_text("0 alert(s) from 3 observations.")
    page.get_by_role("button", name="Create rule").click()
    expect(page.get_by_text("kettle left on", exact=True)).to_be_visible()
    now = int(time.time() * 1000)
    post(api, key, device, [(now - 2000, 3000.0), (now, 3100.0)])
    alert = page.get_by_test_id("alert-list").locator("li").first
    expect(alert).to_contain_text("firing")
    (hit,) = receiver.wait_for(1)
    assert hit.signed_by(HOOK_SECRET) and hit.json["alert"]["rule_name"] == "kettle left on"
    # The dispatcher records the attempt once answered: the API says when it has.
    login = httpx.post(api + "/auth/login", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    with httpx.Client(timeout=10) as http:
        alerts = items_when(
            http,
            api + "/alerts",
            auth,
            {"limit": "10"},
            lambda items: [d["status"] for i in items for d in i["deliveries"]] == ["delivered"],
            timeout_s=TIMEOUT_MS / 1000,
        )
    assert [d["status"] for i in alerts for d in i["deliveries"]] == ["delivered"], alerts
    check_page(page, f"{tag}-alerts")
    alert.get_by_role("button", name="Acknowledge").click()
    expect(alert).to_contain_text("firing, acknowledged")
    # Its notification attempts: the webhook's one delivery, and its one attempt answered 200.
    alert.get_by_text("Notifications (1)").click()
    expect(alert.locator("details li").first).to_have_text(
        f"webhook to {receiver.url} (firing): delivered, 1 attempt(s)"
    )
    expect(alert.locator("li.attempt")).to_have_count(1)
    expect(alert.locator("li.attempt")).to_contain_text("attempt 1 at ")
    expect(alert.locator("li.attempt")).to_contain_text(": ok 200")
    check_page(page, f"{tag}-alert-attempts")

    # -- the rule edited: its preview follows the threshold, then saved ----------------------
    # The last 7 days hold 5 readings: 2,000 W three times, then 3,000 and 3,100 W. Above
    # 2,500 W (clear at 2,200): one alert, from the 3,000 W reading on and still firing; above
    # 3,500 W: none. A preview only: the alert that fired stays as it is.
    rules_box = page.get_by_role("region", name="Rules")
    rules_box.get_by_role("button", name="Edit").click()
    expect(page.get_by_role("heading", name="Edit rule kettle left on")).to_be_visible()
    expect(page.get_by_test_id("preview")).to_have_text("1 alert(s) from 5 observations.")
    page.get_by_label("Threshold").fill("3500")
    expect(page.get_by_test_id("preview")).to_have_text("0 alert(s) from 5 observations.")
    check_page(page, f"{tag}-rule-edit")
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("heading", name="New rule")).to_be_visible()
    expect(rules_box).to_contain_text("kettle left on power_w > 3500 W on kettle plug")

    # -- the tariff goes to 0.50: the next day's cost follows ------------------------------
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Price per kWh (EUR)", exact=True).fill("0.50")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    # 2026-11-01, 24 hours at 1,000 W: 24 kWh at 0.50 = 12.00 EUR. (A day after the first one:
    # readings next to stored ones make the usage service recompute the neighbour's quarter.)
    post(
        api,
        key,
        device,
        steady(datetime(2026, 11, 1, tzinfo=BERLIN), datetime(2026, 11, 2, tzinfo=BERLIN), 1000),
    )
    page.goto(f"{server.url}/#/devices/{device}")
    page.get_by_label("Period containing").fill("2026-11-01")
    page.get_by_label("Period containing").dispatch_event("change")
    page.get_by_role("button", name="By day").click()
    expected = [["1 Nov", "24.000", "12.00"], ["2 Nov", "0.000", "0.00"]]

    def first_days() -> list[list[str]]:
        return [r[:3] for r in rows(page, ".usage-table") if r[0] in ("1 Nov", "2 Nov")]

    deadline = time.monotonic() + 20
    while first_days() != expected and time.monotonic() < deadline:
        page.get_by_role("button", name="By day").click()  # usage is asynchronous: ask again
        page.wait_for_timeout(500)
    assert first_days() == expected
    page.get_by_role("button", name="← Previous").click()
    expect(page.locator(".usage-table tbody tr").first).to_contain_text("25 Oct")
    assert rows(page, ".usage-table")[0][:3] == ["25 Oct", "25.000", "7.50"]  # kept its price

    # -- insights, then out and back in ----------------------------------------------------
    page.get_by_role("link", name="Insights").click()
    expect(page.get_by_role("heading", name="Anomalies")).to_be_visible()
    check_page(page, f"{tag}-insights")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.reload()  # no session survives a sign-out
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # By keyboard alone: the field has focus, Tab moves on, Enter submits.
    expect(page.get_by_label("E-mail")).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Power now")).to_be_visible()
    page.reload()  # the session cookie brings a new access token after a reload
    expect(page.get_by_role("heading", name="Power now")).to_be_visible()
    assert not errors, errors
    context.close()


def test_desktop_journey(server: ServiceProcess, browser: Any) -> None:
    journey(server, browser, {"width": 1280, "height": 900}, "desktop")


def test_phone_journey(server: ServiceProcess, browser: Any) -> None:
    journey(server, browser, {"width": 360, "height": 740}, "phone")


def test_simulate_prints_accounts_to_sign_in_with(server: ServiceProcess, browser: Any) -> None:
    args = ["simulate", "--homes", "1", "--seed", "5", "--backfill", "--days", "0.01"]
    done = run_command([*args, "--duration", "0", "--url", server.url], {}, timeout_s=300)
    assert done.returncode == 0, done.stderr
    head, _, rest = done.stdout.partition("\n")
    said = re.fullmatch(r"accounts \(password for each: '(.+)'\):", head)
    assert said is not None, head
    password = said[1]
    (email,) = rest.split()
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, email, password)
    expect(page.get_by_role("heading", name="Power now")).to_be_visible()
    expect(page.locator(".tile").first).to_be_visible()
    assert page.locator(".tile").count() >= 5  # a meter and four plugs, at least
    context.close()


def signed_in_page(server: ServiceProcess, browser: Any, email: str) -> tuple[Any, Any]:
    """(context, page) of `email` (password PASSWORD, no devices) signed in, on Settings."""
    context = browser.new_context(bypass_csp=True)  # bypass: to inject axe
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, server, email, PASSWORD)
    expect(page.get_by_role("heading", name="No devices yet")).to_be_visible()
    page.get_by_role("link", name="Settings").click()
    return context, page


def test_an_admin_manages_users_from_settings(
    server: ServiceProcess, browser: Any, home_dir: Path
) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    env = embedded_env(home_dir, ET_ADMIN_PASSWORD=PASSWORD)
    made = run_command(["create-admin", email], env)
    assert made.returncode == 0, made.stderr
    user = f"user-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(server.url + "/api/v1/auth/register", json={"email": user, "password": PASSWORD})
    assert r.status_code == 201
    context, page = signed_in_page(server, browser, email)
    expect(page.get_by_role("heading", name="Users (admin)")).to_be_visible()
    page.get_by_label(f"{user} disabled").check()
    page.get_by_role("row", name=user).get_by_role("button", name="Save").click()
    expect(page.get_by_label(f"{user} disabled")).to_be_checked()
    check_page(page, "desktop-admin")
    refused = httpx.post(
        server.url + "/api/v1/auth/login", json={"email": user, "password": PASSWORD}
    )
    assert refused.status_code == 401  # disabled from the page: signing in is refused
    context.close()


def test_access_tokens_from_settings(server: ServiceProcess, browser: Any) -> None:
    """Make a read token in Settings, use it with httpx as a script would, see its last use,
    revoke it from the page and see it refused."""
    api = server.url + "/api/v1"
    email = f"tokens-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(api + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    context, page = signed_in_page(server, browser, email)
    expect(page.get_by_role("heading", name="Access tokens")).to_be_visible()
    expect(page.get_by_text("No access tokens yet.")).to_be_visible()

    page.get_by_label("Token name").fill("Home Assistant")
    page.get_by_label("Scope").select_option("read")
    page.get_by_label("Expires").select_option("30")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="The token Home Assistant: shown only")).to_be_visible()
    token = page.get_by_label("Access token", exact=True).inner_text().strip()
    assert token.startswith("etp_")
    sensor = page.get_by_label(
        "Home Assistant sensor: today's kWh (configuration.yaml)", exact=True
    )
    assert f"Authorization: Bearer {token}" in sensor.inner_text()
    script = {"Authorization": f"Bearer {token}"}
    (household,) = httpx.get(api + "/households", headers=script).json()["items"]
    resource = f"{server.url}/api/v1/usage?granularity=day&from=today&household_id="
    assert f"resource: {resource}{household['id']}" in sensor.inner_text()
    check_page(page, "desktop-settings-token")

    r = httpx.get(api + "/usage", params={"granularity": "day", "from": "today"}, headers=script)
    assert r.status_code == 200, r.text
    r = httpx.patch(api + "/users/me", json={"name": "Mallory"}, headers=script)
    assert r.status_code == 403, r.text  # a read token

    page.reload()
    expect(page.locator("#tokens tbody tr")).to_have_count(1)
    (row,) = rows(page, "#tokens")
    assert row[:2] == ["Home Assistant", "read"]
    assert row[4] != "never"  # its last use, just now

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke Home Assistant").click()
    expect(page.get_by_text("No access tokens yet.")).to_be_visible()
    r = httpx.get(api + "/usage", headers=script)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"], r.text
    context.close()


def test_an_owner_shares_the_household_and_a_member_switches_to_it(
    server: ServiceProcess, browser: Any
) -> None:
    owner, guest = (f"{who}-{uuid.uuid4().hex[:8]}@example.com" for who in ("owner", "guest"))
    for email in (owner, guest):
        r = httpx.post(
            server.url + "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert r.status_code == 201
    context = browser.new_context(bypass_csp=True)  # bypass: to inject axe
    page = context.new_page()
    sign_in(page, server, owner, PASSWORD)
    expect(page.get_by_role("heading", name="No devices yet")).to_be_visible()
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Members")).to_be_visible()
    page.get_by_label("Household name").fill("Rose Cottage")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved")

    # Invite the guest (an existing account: joins at once) as a viewer, make them a member.
    page.get_by_label("Invite by e-mail").fill(guest)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_label(f"Role of {guest}")).to_have_value("viewer")
    page.get_by_label(f"Role of {guest}").select_option("member")
    expect(page.locator("#status")).to_have_text(f"{guest} is now member")
    check_page(page, "desktop-members")

    # The guest has two households now: the switcher shows the shared one.
    other = browser.new_context(bypass_csp=True)
    theirs = other.new_page()
    sign_in(theirs, server, guest, PASSWORD)
    switch = theirs.get_by_label("Household")
    expect(switch).to_be_visible()
    switch.select_option(label="Rose Cottage (member)")
    expect(theirs.get_by_role("heading", name="Rose Cottage")).to_be_visible()
    theirs.get_by_role("link", name="Settings").click()
    expect(theirs.get_by_role("group", name=re.compile("only its owner"))).to_be_visible()
    other.close()

    # Removed by the owner, the guest is no longer listed.
    page.get_by_role("button", name=f"Remove {guest}").click()
    expect(page.get_by_label(f"Role of {guest}")).to_have_count(0)


def test_a_metered_home_shows_what_it_consumes_once_and_other(
    server: ServiceProcess, browser: Any
) -> None:
    api = server.url + "/api/v1"
    email = f"metered-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(api + "/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = httpx.post(api + "/auth/login", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert httpx.patch(api + "/users/me", json={"timezone": "UTC"}, headers=auth).is_success

    def device(**body: Any) -> tuple[str, str]:
        r = httpx.post(api + "/devices", json=body, headers=auth)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["api_key"]

    meter, meter_key = device(name="main meter", type="meter", role="grid")
    plug, plug_key = device(name="fridge plug", type="plug", role="sub", parent_id=meter)
    # The last 3 minutes: the meter 2,000 W (0.100 kWh), the fridge behind it 500 W (0.025 kWh,
    # inside the meter's). The home consumes 2,000 W now, not 2,500; today 0.100 kWh, of which
    # 0.100 - 0.025 = 0.075 kWh no plug explains ("other").
    now = int(time.time() * 1000)
    instants = (now - 180_000, now - 90_000, now)
    post(api, meter_key, meter, [(ts, 2000.0) for ts in instants])
    post(api, plug_key, plug, [(ts, 500.0) for ts in instants])
    context = browser.new_context(bypass_csp=True)  # bypass: to inject axe
    page = context.new_page()
    sign_in(page, server, email, PASSWORD)
    expect(page.get_by_role("heading", name="Power now")).to_be_visible()
    expect(page.locator(f'output[data-device="{plug}"]')).to_have_text("500 W")
    expect(page.locator("#total-power")).to_have_text("2,000 W")
    expect(page.get_by_test_id("today-kwh")).to_have_text("0.100 kWh")
    expect(page.get_by_test_id("today-other")).to_have_text("0.075 kWh")
    # The add-device form offers the meter as what a new plug sits inside.
    page.locator("summary", has_text="Add a device").click()
    page.get_by_label("Role").select_option("sub")
    page.get_by_label("Inside").select_option(label="main meter")
    check_page(page, "metered-home")
    context.close()
