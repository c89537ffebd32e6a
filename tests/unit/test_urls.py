"""Every ET_* file URL reads the same way (SQLAlchemy's): three slashes and a path relative to
the working directory, four and an absolute path."""

from __future__ import annotations

from pathlib import Path

from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.stores.metadata import async_url
from energy_tracker.core.stores.timeseries.sqlite import sqlite_path


def test_relative_file_urls() -> None:
    assert bus_from_url("embedded:///data/bus.db", 4).path == "data/bus.db"  # type: ignore[attr-defined]
    assert sqlite_path("sqlite:///data/series.db") == Path.cwd() / "data/series.db"
    assert async_url("sqlite:///data/meta.db").database == "data/meta.db"


def test_absolute_file_urls() -> None:
    assert bus_from_url("embedded:////srv/et/bus.db", 4).path == "/srv/et/bus.db"  # type: ignore[attr-defined]
    assert sqlite_path("sqlite:////srv/et/series.db") == Path("/srv/et/series.db")
    assert async_url("sqlite:////srv/et/meta.db").database == "/srv/et/meta.db"
