"""The event backbone port: publish keyed batches, consume them in groups, commit after work.

Delivery is at least once. Messages with one key land in one partition and keep their order;
consumers of one group share the partitions; what a consumer did not commit is delivered again
to whoever owns the partition next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


# Not frozen, though never changed: a frozen dataclass's __init__ sets each field through
# object.__setattr__ and costs ~5x more, and consumers build one per record.
@dataclass(slots=True)
class Message:
    """One record as a consumer sees it; `offset` is its position in `partition`."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class Consumer(ABC):
    """A member of a consumer group on one topic."""

    @abstractmethod
    async def poll(self, max_records: int = 1000, timeout_s: float = 1.0) -> list[Message]:
        """Wait up to `timeout_s` for records of the partitions this member owns."""

    @abstractmethod
    async def commit(self, messages: Sequence[Message]) -> None:
        """Mark everything up to and including these messages done for the group."""

    @abstractmethod
    async def lag(self) -> dict[int, int]:
        """Records not yet consumed in each partition this member owns now (end less position):
        what the consumer-lag metric shows, and where a partition moved after a rebalance."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group; uncommitted records go to the next owner of the partition."""


class EventBus(ABC):
    """Connection to the backbone; adapters: embedded (SQLite log) and kafka."""

    @abstractmethod
    async def start(self) -> None:
        """Connect; raise BackendUnavailable naming ET_BUS_URL when the backend is unreachable."""

    @abstractmethod
    async def stop(self) -> None:
        """Flush what was published and disconnect."""

    @abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics (and their partitions) if they do not exist yet."""

    @abstractmethod
    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Append (key, value) records; returns once the backbone has durably accepted all."""

    @abstractmethod
    async def subscribe(self, topic: str, group: str) -> Consumer:
        """Join `group` on `topic`; a new group starts at the earliest record."""
