"""Pick the event backbone adapter from ET_BUS_URL, so only configuration differs between a
Raspberry Pi (`embedded:///data/bus.db`) and a cluster (`kafka://k1:9092,k2:9092`)."""

from __future__ import annotations

from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.errors import UnsupportedUrl

SUPPORTED = "embedded:///path/to/bus.db or kafka://host:port[,host2:port]"


def bus_from_url(url: str, partitions: int) -> EventBus:
    """An unstarted bus for `url`; adapters are imported lazily so aiokafka loads only if used."""
    scheme, sep, rest = url.partition("://")
    target = rest.rstrip("/") if scheme == "kafka" else rest
    if not sep or not target:
        raise UnsupportedUrl("ET_BUS_URL", url, SUPPORTED)
    if scheme == "embedded":
        from energy_tracker.core.bus.embedded import EmbeddedBus

        return EmbeddedBus(target, partitions)
    if scheme == "kafka":
        from energy_tracker.core.bus.kafka import KafkaBus

        return KafkaBus(target, partitions)
    raise UnsupportedUrl("ET_BUS_URL", url, SUPPORTED)
