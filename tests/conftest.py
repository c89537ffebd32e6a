"""Shared fixtures: real backends (see tests/backends.py) and a report of skipped legs."""

from __future__ import annotations

import pytest

from tests.backends import (  # noqa: F401 - fixtures
    SKIPPED_LEGS,
    metadata_db,
    metadata_db_url,
    mysql_url,
    postgres_url,
    redis_prefix,
    redis_url,
)
from tests.kafka_broker import kafka_url  # noqa: F401


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPED_LEGS:
        terminalreporter.section("legs skipped (their servers are not running here)")
        for leg in sorted(SKIPPED_LEGS):
            terminalreporter.write_line(f"  {leg}")
