"""`et_db_pool_connections` (core/stores/pools.py) as Prometheus scrapes it: the connections a
store's pool has in use, idle, and at most, against the real servers."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.postgres import PostgresSeriesStore


def pool(database: str) -> dict[str, float | None]:
    return {
        state: REGISTRY.get_sample_value(
            "et_db_pool_connections", {"database": database, "state": state}
        )
        for state in ("in_use", "idle", "max")
    }


async def test_metadata_pool_use_is_scraped(metadata_db: Database) -> None:
    if metadata_db.url.startswith("sqlite"):
        pytest.skip("SQLite has no connection pool to watch")
    async with metadata_db.begin() as conn:
        await conn.execute(text("SELECT 1"))
        during = pool("metadata")
    after = pool("metadata")
    # SQLAlchemy's default pool: 5 kept, 10 more on demand.
    assert during == {"in_use": 1, "idle": 0, "max": 15}
    assert after == {"in_use": 0, "idle": 1, "max": 15}


@pytest.mark.postgres
async def test_series_pool_use_is_scraped(postgres_url: str) -> None:
    store = PostgresSeriesStore(postgres_url, min_connections=2, max_connections=4)
    await store.start()
    try:
        assert pool("series") == {"in_use": 0, "idle": 2, "max": 4}
        async with store._acquire():
            assert pool("series") == {"in_use": 1, "idle": 1, "max": 4}
    finally:
        await store.stop()
    assert pool("series") == {"in_use": None, "idle": None, "max": None}
