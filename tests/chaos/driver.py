"""The client of a chaos trial: streams the plan's readings through the gateway as a device
would, retrying until each POST is answered 202, and tallies every answer it got.

A POST whose answer never came (the gateway killed mid-request) or said "not now" (RETRIED) is
sent again, as is; the platform ignores a duplicate `(device_id, ts)`, so a retry can never
count twice. Any other answer but 202 (a 500, a 401 while a database restarts, a 422 for good
readings) is wrong: it is kept for the trial to fail on, and retried so that the trial ends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_PAUSE_S = 0.25  # a device's back-off between attempts, not a synchronisation
# What says "not now, try again": the rate limit, and a service or store away (502 and 504
# from the gateway when a service is down or slow). A 500 says the request broke something.
RETRIED = frozenset({429, 502, 503, 504})


@dataclass
class Tally:
    """What the driver sent and what it was answered, by the fault in force at the time."""

    posts: int = 0
    readings_accepted: int = 0
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (fault, answer)
    wrong: list[str] = field(default_factory=list)

    def during(self, fault: str) -> Counter[str]:
        return Counter({a: n for (f, a), n in self.answers.items() if f == fault})


class Driver:
    """Sends POST /readings with a device key until accepted; `fault` names the outage the
    chaos thread has in force, so the answers can be told apart."""

    def __init__(self, api: str, deadline_s: float) -> None:
        self.api = api
        self.tally = Tally()
        self.fault = ""
        self.done = threading.Event()
        self._deadline = time.monotonic() + deadline_s
        self._http = httpx.Client(timeout=60.0)

    def close(self) -> None:
        self._http.close()

    def send(self, key: str, readings: list[dict[str, Any]]) -> None:
        """POST `readings` with `key` until the answer is 202."""
        self.tally.posts += 1
        while True:
            sent_during = self.fault
            try:
                r = self._http.post(
                    self.api + "/readings",
                    json={"readings": readings},
                    headers={"X-Device-Key": key},
                )
            except httpx.TransportError as exc:
                fault = self.fault or sent_during
                self.tally.answers[(fault, "no answer")] += 1
                what = type(exc).__name__
            else:
                # An answer belongs to the outage in force when it came, or when it was asked.
                fault = self.fault or sent_during
                self.tally.answers[(fault, str(r.status_code))] += 1
                if r.status_code == 202:
                    assert r.json() == {"accepted": len(readings)}, r.text
                    self.tally.readings_accepted += len(readings)
                    return
                what = f"{r.status_code} {r.text[:300]}"
                if r.status_code not in RETRIED:
                    self.tally.wrong.append(f"during {fault or 'kills'}: {what}")
            assert time.monotonic() < self._deadline, f"readings still refused: {what}"
            time.sleep(RETRY_PAUSE_S)
