"""A wrong or unreachable ET_* URL stops the start with one line naming it, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import embedded_env, run_command


@pytest.mark.parametrize(
    ("variable", "url", "says"),
    [
        ("ET_DB_URL", "mysql://root:hunter2@127.0.0.1:1/et", "unreachable"),
        ("ET_TSDB_URL", "postgresql://postgres@127.0.0.1:1/et", "unreachable"),
        ("ET_BUS_URL", "kafka://127.0.0.1:1", "unreachable"),
        ("ET_BUS_URL", "amqp://127.0.0.1:5672", "not supported"),
        ("ET_HTTP_PORT", "eighty", "bad configuration"),
    ],
)
def test_bad_url_fails_with_one_line(tmp_path: Path, variable: str, url: str, says: str) -> None:
    done = run_command(["up"], embedded_env(tmp_path, **{variable: url}), timeout_s=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and says in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert "hunter2" not in done.stderr
