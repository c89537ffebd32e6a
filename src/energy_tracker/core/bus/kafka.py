"""The Kafka adapter: any Kafka-protocol broker (Apache Kafka, Redpanda, Tansu, MSK) via aiokafka.

Why aiokafka and not confluent-kafka: confluent-kafka hangs in consumer-group joins against Tansu
(LIMITS.md), and the same code has to run against every broker.

Why batches: aiokafka's per-message `send()` caps at ~60k msgs/s, while whole record batches built
with `create_batch` and sent with `send_batch` reach ~540k. Records are split by partition with
the default partitioner's murmur2 hash, so a key lands where any Kafka client would put it and its
order holds; one partition's batches are sent one after another (aiokafka keeps one request in
flight per partition) and `publish` returns only when every batch is acknowledged by all
in-sync replicas. Across requests, `GroupCommit` plays the part of the producer's linger: what
callers publish while a produce is in flight goes out together in the next one, so one-reading
requests share round trips instead of each paying one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.partitioner import murmur2

from energy_tracker.core.bus.base import Consumer, EventBus, Message
from energy_tracker.core.bus.group_commit import GroupCommit
from energy_tracker.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

# aiokafka's murmur2 is pure Python (~3 µs a key); device ids repeat, so a bounded cache of the
# hash keeps partitioning off the hot path without changing where a key lands.
_key_hash = functools.lru_cache(maxsize=1 << 16)(murmur2)


class KafkaBus(EventBus):
    """Producer and admin client for one cluster; consumers are created per subscription.

    `replication_factor` applies to the topics this bus creates: 1 suits a single broker such
    as Tansu; a production cluster wants 3 (or topics created by its operators beforehand).
    """

    def __init__(
        self,
        bootstrap: str,
        partitions: int = 8,
        *,
        client_id: str = "energy-tracker",
        session_timeout_ms: int = 10_000,
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 15.0,
        max_batch_bytes: int = 1 << 20,
        replication_factor: int = 1,
    ) -> None:
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"
        self.partitions = partitions
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.max_batch_bytes = max_batch_bytes
        self.replication_factor = replication_factor
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        # Topics known to exist; publishing or subscribing to another one creates it first,
        # because brokers that auto-create (Tansu does) would pick their own partition count.
        self._topics: set[str] = set()
        self._consumers: set[KafkaConsumer] = set()
        self._group_commit = GroupCommit(self._write)

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        return self._producer

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            max_batch_size=self.max_batch_bytes,
            max_request_size=self.max_batch_bytes,
        )
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin"
        )
        # A broker that cannot be reached is reported once, by us, in one line; the client's
        # own connection errors would only repeat it with less context.
        client_log = logging.getLogger("aiokafka")
        was_disabled, client_log.disabled = client_log.disabled, True
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._producer.start()
                await self._admin.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._disconnect()
            reason = str(exc) or f"no answer within {self.connect_timeout_s:g} s"
            raise BackendUnavailable("ET_BUS_URL", self.url, reason) from None
        finally:
            client_log.disabled = was_disabled

    async def stop(self) -> None:
        await self._group_commit.flush()
        for consumer in list(self._consumers):
            await consumer.close()
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(topics) if t not in self._topics]
        if not missing:
            return
        if self._admin is None:
            raise RuntimeError("KafkaBus is not started")
        response = await self._admin.create_topics(
            [NewTopic(t, self.partitions, self.replication_factor) for t in missing]
        )
        for topic, code, *message in response.topic_errors:
            error = for_code(code)
            if code and error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {topic}: {message[0] if message else code}")
        self._topics.update(missing)

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        # A broker that is away would hold the caller for aiokafka's retries (40 s and more):
        # give up sooner, so ingestion can answer 503 while the client still waits. Records a
        # timed-out send still delivers are duplicates the consumers ignore.
        async with asyncio.timeout(self.publish_timeout_s):
            await self._group_commit.publish(topic, records)

    async def _write(self, batch: dict[str, list[tuple[bytes, bytes]]]) -> None:
        """One group-commit round: every topic's records, acknowledged by all in-sync replicas."""
        await asyncio.gather(*(self._produce(topic, records) for topic, records in batch.items()))

    async def _produce(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        await self.ensure_topics([topic])
        partitions = sorted(await self.producer.partitions_for(topic))
        count = len(partitions)
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for key, value in records:
            # What aiokafka's DefaultPartitioner picks for a non-empty key.
            by_partition[partitions[(_key_hash(key) & 0x7FFFFFFF) % count]].append((key, value))
        await asyncio.gather(*(self._send(topic, p, items) for p, items in by_partition.items()))

    async def _send(self, topic: str, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        """Send one partition's records as full batches, in order; wait for every ack."""
        producer = self.producer
        acks = []
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                # An empty batch takes any record; the broker judges whether it is too large.
                batch.append(key=key, value=value, timestamp=None)
        acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)

    async def subscribe(self, topic: str, group: str) -> Consumer:
        """Join the group; returns once the broker has given this member its partitions."""
        await self.ensure_topics([topic])
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.session_timeout_ms // 3,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        _leave_from_generation_zero(consumer)
        wrapped = KafkaConsumer(self, consumer, group)
        self._consumers.add(wrapped)
        return wrapped


def _leave_from_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Make `stop()` send LeaveGroup even when the group is in generation 0.

    Tansu numbers a group's first generation 0 where Kafka starts at 1, and aiokafka only sends
    LeaveGroup for a generation above 0. Without the leave, the next member of a fresh group
    waits for the closed member's session to expire (~18 s instead of ~5 s on Tansu). LeaveGroup
    carries no generation, so claiming generation 1 at that point changes nothing else; by then
    the heartbeat has stopped. Kafka never reports generation 0, so this only acts on Tansu.
    """
    coordinator = consumer._coordinator
    if coordinator is None:
        return
    leave = coordinator._maybe_leave_group

    async def leave_any_generation() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1
        await leave()

    coordinator._maybe_leave_group = leave_any_generation


class KafkaConsumer(Consumer):
    """An AIOKafkaConsumer in a group with manual commits."""

    def __init__(self, bus: KafkaBus, consumer: AIOKafkaConsumer, group: str) -> None:
        self.bus = bus
        self.consumer = consumer
        self.group = group

    async def poll(self, max_records: int = 1000, timeout_s: float = 1.0) -> list[Message]:
        fetched = await self.consumer.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=max_records
        )
        return [
            Message(r.topic, r.partition, r.offset, r.key or b"", r.value or b"")
            for records in fetched.values()
            for r in records
        ]

    async def commit(self, messages: Sequence[Message]) -> None:
        """Commit the next offset of each partition; skip partitions a rebalance took away,
        since their new owner starts from the last commit and gets these records again."""
        ends: dict[tuple[str, int], int] = {}
        for m in messages:
            where = (m.topic, m.partition)
            if m.offset >= ends.get(where, -1):
                ends[where] = m.offset
        offsets = {TopicPartition(*where): end + 1 for where, end in ends.items()}
        assigned = self.consumer.assignment()
        owned = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if owned:
                await self.consumer.commit(owned)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "group %s: commit lost to a rebalance (%s); records will be redelivered",
                self.group,
                exc,
            )
            return
        if len(owned) < len(offsets):
            log.warning(
                "group %s: commit skipped for revoked partitions %s; they will be redelivered",
                self.group,
                sorted(set(offsets) - set(owned)),
            )

    async def lag(self) -> dict[int, int]:
        """From the high watermark the last fetch reported; a partition not fetched yet since it
        was assigned is left out until it is."""
        out: dict[int, int] = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None:
                out[tp.partition] = max(0, end - await self.consumer.position(tp))
        return out

    async def close(self) -> None:
        """Leave the group at once (LeaveGroup), so the partitions move without a timeout."""
        if self in self.bus._consumers:
            self.bus._consumers.discard(self)
            await self.consumer.stop()
