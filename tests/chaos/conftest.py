"""Prints the chaos trials' figures once the run is over."""

from __future__ import annotations

import pytest

from tests.chaos.report import RESULTS, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("chaos trials")
        for line in table(RESULTS):
            terminalreporter.write_line(line)
