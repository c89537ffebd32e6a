"""The optional narrative of the summary: a few sentences an LLM writes from the computed facts
only, through any OpenAI-compatible chat-completions endpoint (`ET_LLM_URL`, e.g. a local
Ollama or llama.cpp server). Without the URL nothing here runs and nothing leaves the machine.

Why it is checked: a language model invents numbers fluently, and a wrong figure about a
household's bill is worse than none. So every number in the text must be one of the facts
(as given, or rounded to fewer decimals); otherwise the text is dropped. A slow or broken
endpoint costs at most the timeout and leaves the summary as it is; a text is asked for at most
once a day per subject and set of facts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx

log = logging.getLogger(__name__)

PROMPT = (
    "You write two or three short sentences for a household about its electricity use. Use only "
    "the facts given as JSON. Write numbers exactly as they appear in the facts, and no other "
    "numbers: no dates, no percentages you computed, no counts."
)
# A number as written in a text: optional sign, digits with an optional decimal part (a thousands
# separator is not allowed: "1,314" is read as two numbers, so facts are given without them).
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
MAX_TOKENS = 200


def numbers_in(text: str) -> list[str]:
    return NUMBER.findall(text)


def allowed(number: str, facts: dict[str, float | str]) -> bool:
    """Whether `number` is one of the numeric facts, as given or rounded to its decimals."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number)
    for fact in facts.values():
        if isinstance(fact, str):
            continue
        if round(float(fact), decimals) == value or round(abs(float(fact)), decimals) == value:
            return True
    return False


def checked(text: str, facts: dict[str, float | str]) -> str | None:
    """The text when every number in it is one of the facts; None otherwise, or when empty."""
    text = text.strip()
    if not text:
        return None
    bad = [n for n in numbers_in(text) if not allowed(n, facts)]
    if bad:
        log.warning("narrative dropped: numbers not among the facts: %s", ", ".join(bad[:5]))
        return None
    return text


@dataclass
class Narrator:
    """Asks the endpoint for a text per subject, day and facts, and remembers today's."""

    url: str
    model: str
    timeout_s: float
    _cache: dict[tuple[str, date, str], str | None] = field(default_factory=dict)

    async def narrate(self, subject: str, day: date, facts: dict[str, float | str]) -> str | None:
        """The checked text for these facts; None when the endpoint fails, is slow or wrote a
        number that is not a fact. Asked once a day per subject and facts, failures included
        (a broken endpoint is not hammered)."""
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
        key = (subject, day, digest)
        if key in self._cache:
            return self._cache[key]
        for old in [k for k in self._cache if k[1] != day]:
            del self._cache[old]
        self._cache[key] = text = await self._ask(facts)
        return text

    async def _ask(self, facts: dict[str, float | str]) -> str | None:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": json.dumps(facts)},
            ],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(self.url, json=body)
                response.raise_for_status()
                answer: Any = response.json()
            content = answer["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("narrative skipped: %s from the LLM endpoint", type(exc).__name__)
            return None
        return checked(content, facts) if isinstance(content, str) else None
