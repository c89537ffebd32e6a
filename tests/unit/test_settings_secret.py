"""The token signing secret: a guessable one is refused, a generated one is its owner's alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from energy_tracker.config import Settings


def test_a_short_secret_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="jwt_secret"):
        Settings(jwt_secret="change-me")
    assert Settings(jwt_secret="x" * 32).secret() == "x" * 32


def test_a_generated_secret_is_readable_by_its_owner_only_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret=None)
    first = settings.secret()
    path = tmp_path / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path, jwt_secret=None).secret() == first
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-secret"]  # no partial file left
