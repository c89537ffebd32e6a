"""Pick the time-series adapter from the scheme of ET_TSDB_URL."""

from __future__ import annotations

from energy_tracker.core.errors import UnsupportedUrl
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.core.stores.timeseries.postgres import SCHEMES, PostgresSeriesStore
from energy_tracker.core.stores.timeseries.sqlite import VARIABLE, SqliteSeriesStore


def series_store_from_url(url: str) -> SeriesStore:
    """The store a URL names: `sqlite:///abs/path/series.db` or `postgresql://user@host/db`
    (also `postgres://` and `postgresql+asyncpg://`). Nothing is opened until `start()`."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        return SqliteSeriesStore.from_url(url)
    if scheme in SCHEMES:
        return PostgresSeriesStore(url)
    raise UnsupportedUrl(
        VARIABLE, url, "sqlite:///absolute/path/series.db or postgresql://user@host:port/db"
    )
