"""Connection-pool use of the stores a process has started, as one Prometheus gauge.

`et_db_pool_connections{database, state}`: connections in use, idle, and the most the pool may
open (`max`), read when Prometheus scrapes, so nothing is counted on the query path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol
from weakref import WeakValueDictionary

from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector


class PooledStore(Protocol):
    def pool_use(self) -> tuple[int, int, int] | None:
        """(in use, idle, max) connections; None while the store is not started."""


_watched: WeakValueDictionary[str, PooledStore] = WeakValueDictionary()


def watch_pool(database: str, store: PooledStore) -> None:
    """Report `store`'s pool as `database` from now on (a later store of that name replaces it)."""
    _watched[database] = store


class _PoolCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "et_db_pool_connections",
            "Database connections of this process: in_use, idle, max",
            labels=["database", "state"],
        )
        for database, store in list(_watched.items()):
            use = store.pool_use()
            if use is not None:
                for state, value in zip(("in_use", "idle", "max"), use, strict=True):
                    family.add_metric([database, state], value)
        yield family


REGISTRY.register(_PoolCollector())
