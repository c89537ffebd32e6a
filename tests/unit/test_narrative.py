"""The summary's narrative (services/insights/narrative.py) against a small OpenAI-compatible
chat-completions server of the tests' own on loopback (tests/llm_server.py): its good, invented,
slow and broken answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import date

import pytest

from energy_tracker.services.insights.narrative import Narrator, checked
from tests.llm_server import ANSWERS, Endpoint, serving

FACTS: dict[str, float | str] = {
    "currency": "EUR",
    "always_on_w": 150,
    "always_on_cost_a_year": 394.2,
    "month_to_date_kwh": 51.2,
    "change_against_last_month_pct": 30.6,
}
GOOD = "Your home draws 150 W around the clock, about 394.2 EUR a year; 51.2 kWh so far."
ANSWERS["/good"] = GOOD
ANSWERS["/invented"] = "Your home draws 150 W around the clock; switch off 3 devices to save 80."


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving() as url:
        yield url


def narrator(url: str) -> Narrator:
    return Narrator(url, "test-model", timeout_s=0.5)


async def test_a_text_of_the_facts_is_kept_and_asked_once_a_day(server: str) -> None:
    Endpoint.requests.clear()
    n = narrator(server + "/good")
    day = date(2026, 3, 8)
    assert await n.narrate("home", day, FACTS) == GOOD
    assert await n.narrate("home", day, FACTS) == GOOD
    # The facts went as the user message, to the model named; asked once for the same day.
    assert len(Endpoint.requests) == 1
    sent = Endpoint.requests[0]
    assert sent["model"] == "test-model"
    assert json.loads(sent["messages"][1]["content"]) == FACTS
    # The next day, or other facts, are asked again.
    await n.narrate("home", date(2026, 3, 9), FACTS)
    await n.narrate("home", date(2026, 3, 9), FACTS | {"month_to_date_kwh": 60.0})
    assert len(Endpoint.requests) == 3


async def test_a_text_with_a_number_that_is_no_fact_is_dropped(server: str) -> None:
    # 3 and 80 are none of the facts.
    assert await narrator(server + "/invented").narrate("home", date(2026, 3, 8), FACTS) is None


@pytest.mark.parametrize("path", ["/slow", "/broken", "/garbage", "/shape"])
async def test_a_slow_or_broken_endpoint_gives_no_text(server: str, path: str) -> None:
    assert await narrator(server + path).narrate("home", date(2026, 3, 8), FACTS) is None


async def test_an_unreachable_endpoint_gives_no_text() -> None:
    # A loopback port just bound and closed: nobody listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert await narrator(url).narrate("home", date(2026, 3, 8), FACTS) is None


def test_numbers_must_be_facts_as_given_or_rounded() -> None:
    # 394.2 rounds to 394; 30.6 is given; 51 is 51.2 rounded; 51.3 is not a fact.
    assert checked("About 394 EUR a year, 30.6 % more, 51 kWh.", FACTS) is not None
    assert checked("51.3 kWh so far.", FACTS) is None
    assert checked("   ", FACTS) is None
