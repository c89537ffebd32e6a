"""Pick the event backbone adapter from ET_BUS_URL, so only configuration differs between a
Raspberry Pi (`embedded:////var/lib/et/bus.db`) and a cluster (`kafka://k1:9092,k2:9092`).

File URLs read as SQLAlchemy reads `sqlite:` ones, so all ET_* file URLs agree: three slashes
and a path relative to the working directory, or four and an absolute path."""

from __future__ import annotations

from collections.abc import Collection

from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.errors import UnsupportedUrl

SUPPORTED = "embedded:////absolute/path/bus.db or kafka://host:port[,host2:port]"


def bus_from_url(
    url: str,
    partitions: int,
    *,
    unread_topics: Collection[str] = (),
    unread_keep: int | None = None,
) -> EventBus:
    """An unstarted bus for `url`; adapters are imported lazily so aiokafka loads only if used.

    The embedded log keeps only the newest `unread_keep` records per partition of the
    `unread_topics` (those no service consumes) while no group reads them (default
    `embedded.UNREAD_KEEP`); a Kafka broker
    applies its own topic retention (`retention.ms`, `retention.bytes`) instead."""
    scheme, sep, rest = url.partition("://")
    target = rest.rstrip("/") if scheme == "kafka" else rest.removeprefix("/")
    if not sep or not target:
        raise UnsupportedUrl("ET_BUS_URL", url, SUPPORTED)
    if scheme == "embedded":
        from energy_tracker.core.bus.embedded import UNREAD_KEEP, EmbeddedBus

        keep = UNREAD_KEEP if unread_keep is None else unread_keep
        return EmbeddedBus(target, partitions, unread_topics=unread_topics, unread_keep=keep)
    if scheme == "kafka":
        from energy_tracker.core.bus.kafka import KafkaBus

        return KafkaBus(target, partitions)
    raise UnsupportedUrl("ET_BUS_URL", url, SUPPORTED)
