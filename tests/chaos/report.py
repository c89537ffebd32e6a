"""The figures of each chaos trial, printed as one table at the end of the run
(tests/chaos/conftest.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class TrialResult:
    """One trial: what was done to the deployment, what was sent, and what came out."""

    mode: str
    trial: int
    seed: int
    setup_s: float
    stream_s: float
    kills: int
    outages: str
    posts: int
    readings_sent: int
    answers: Counter[tuple[str, str]]  # (fault in force, answer): n
    lost: int = 0
    double_counted: int = 0
    energy_wrong: list[str] = field(default_factory=list)
    alerts_expected: int = 0
    alerts: int = 0
    notified: int = 0
    resends: int = 0
    unnotified: list[str] = field(default_factory=list)
    over_notified: list[str] = field(default_factory=list)
    dlq_poison: int = 0
    dlq_repeats: int = 0
    dlq_unexpected: int = 0
    settle_s: float = 0.0


RESULTS: list[TrialResult] = []


def _answers(answers: Counter[tuple[str, str]]) -> str:
    """`202×96 no answer×12 broker:503×3`: each answer, with the outage it came in (if any)."""
    return " ".join(
        f"{fault + ':' if fault else ''}{answer}×{n}"
        for (fault, answer), n in sorted(answers.items())
    )


COLUMNS = (
    ("mode", lambda r: r.mode),
    ("trial", lambda r: str(r.trial)),
    ("seed", lambda r: str(r.seed)),
    ("setup/stream/settle s", lambda r: f"{r.setup_s:.0f}/{r.stream_s:.0f}/{r.settle_s:.0f}"),
    ("kills", lambda r: str(r.kills)),
    ("outages", lambda r: r.outages),
    ("readings", lambda r: str(r.readings_sent)),
    ("POSTs", lambda r: str(r.posts)),
    ("answers", lambda r: _answers(r.answers)),
    ("lost", lambda r: str(r.lost)),
    ("double", lambda r: str(r.double_counted)),
    ("wrong kWh", lambda r: str(len(r.energy_wrong))),
    ("alerts", lambda r: f"{r.alerts}/{r.alerts_expected}"),
    ("notified", lambda r: f"{r.notified}/{2 * r.alerts_expected}"),
    ("re-sent", lambda r: str(r.resends)),
    ("DLQ", lambda r: f"{r.dlq_poison} poison (+{r.dlq_repeats} again), {r.dlq_unexpected} other"),
)


def table(results: list[TrialResult]) -> list[str]:
    """The results as aligned text rows, a header first, and a line of totals."""
    rows = [[name for name, _ in COLUMNS]] + [[cell(r) for _, cell in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(
        f"{len(results)} trial(s): {sum(r.kills for r in results)} kills, "
        f"{sum(r.readings_sent for r in results)} readings sent, "
        f"{sum(r.lost for r in results)} lost, {sum(r.double_counted for r in results)} "
        "double-counted"
    )
    return lines
