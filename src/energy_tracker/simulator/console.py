"""What `energy-tracker simulate` shows while it runs: homes registered, then readings sent
(a bar during a backfill, a running count live), drawn with rich on standard error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from energy_tracker.simulator.driver import PASSWORD, HomeAccount, Plan, simulate

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """Seconds in `10s`, `500ms`, `5m`, `1h`, `2d` or a bare number of seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 10s, 500ms, 5m or 1h")
    return float(match[1]) * _UNIT_S[match[2] or "s"]


class RichProgress:
    """The driver's Progress, as rich bars."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self._homes: TaskID | None = None
        self._readings: TaskID | None = None

    def homes_registered(self, done: int, total: int) -> None:
        if self._homes is None:
            self._homes = self.bars.add_task("homes", total=total)
        self.bars.update(self._homes, completed=done)

    def accounts_ready(self, accounts: Sequence[HomeAccount]) -> None:
        """Printed on standard output (the bars are on standard error), so it can be kept."""
        print(f"accounts (password for each: {PASSWORD!r}):", flush=True)
        for account in accounts:
            print(f"  {account.email}", flush=True)

    def backfill_started(self, total: int) -> None:
        self._readings = self.bars.add_task("backfill", total=total)

    def sent(self, readings: int) -> None:
        if self._readings is not None:
            self.bars.advance(self._readings, readings)

    def live_started(self) -> None:
        self._readings = self.bars.add_task("live", total=None)


def run(plan: Plan, base_url: str, mqtt_url: str | None) -> None:
    """Run the simulation until it is done or interrupted, drawing its progress."""
    bars = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bars:
        asyncio.run(simulate(plan, base_url, RichProgress(bars), mqtt_url))
