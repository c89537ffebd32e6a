"""The consume loop every service uses: poll a batch, handle it, dead-letter what is poison, commit.

A handler returns the messages it refuses (bad data) with a reason; those go to `<topic>.dlq`.
A handler that raises a transient error (`core.failures.is_transient`: a store or the network
away, a lock, a deadlock) stops the batch: nothing is committed and the batch is retried after a
pause that doubles up to `MAX_RETRY_PAUSE_S`, so an outage never empties a topic into the DLQ.
Any other failure is retried message by message, so that only the message that is itself bad
goes to the DLQ with the error, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Gauge

from energy_tracker.core.bus.base import Consumer, EventBus, Message
from energy_tracker.core.failures import is_transient
from energy_tracker.core.loops import Backoff, Stopper

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the handler will never be able to process, and why."""

    message: Message
    reason: str


MAX_RETRY_PAUSE_S = 30.0
POLL_RECORDS = 5000
"""Records a poll at most. One-reading records (live devices: one per request or MQTT message)
are ~200 bytes, and every poll pays fixed costs (a directory look-up, a few store round trips, a
commit): 500 a poll held the consumers to a few thousand readings a second. Larger polls take
longer to handle, and the records wait for the whole poll: 5,000 keeps a poll well under a
second."""
POLL_BYTES = 8 * 1024 * 1024
"""Bytes a poll aims at: a record may carry thousands of readings (a batch POST), and a
household box must not hold millions at once. The loop sizes its next poll by the largest
records it has polled lately, so a mix of small and large records is bounded by the large."""
Handler = Callable[[Sequence[Message]], Awaitable[Sequence[Rejected]]]

# One series per partition a member owns: after a rebalance the partitions move from one
# replica's series to another's, and a member that left (or died) stops reporting them.
CONSUMER_LAG = Gauge(
    "et_consumer_lag",
    "Records of a partition not yet consumed by its owner in the group",
    ["group", "topic", "partition"],
)
LAG_EVERY_S = 1.0
LAG_IDLE_EVERY_S = 5.0
"""While polls find nothing and the last lag reported was nothing either, the lag is reported
this seldom (an idle consumer stays nearly idle), yet often enough that partitions moved by a
rebalance show up soon."""


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def dead_letter(message: Message, reason: str) -> tuple[bytes, bytes]:
    """The DLQ record: the original bytes, the error and where the message came from."""
    source = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    return dead_letter_record(message.key, message.value, reason, source)


def dead_letter_record(
    key: bytes, value: bytes, reason: str, source: dict[str, Any]
) -> tuple[bytes, bytes]:
    """A DLQ record for bytes that came from anywhere (a bus message, an MQTT publish): the
    original bytes, the error, and `source` saying where they came from."""
    body = {
        "v": 1,
        "type": "dead-letter",
        "data": {
            "error": reason,
            "source": source,
            "value_b64": base64.b64encode(value).decode(),
        },
    }
    return key, orjson.dumps(body)


class ConsumeLoop:
    """Runs one handler over one topic for one consumer group until stopped."""

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        group: str,
        handler: Handler,
        *,
        max_records: int = POLL_RECORDS,
        max_bytes: int = POLL_BYTES,
        retry_pause_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.handler = handler
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._record_bytes = 0.0  # the largest record polled lately (0: none yet)
        self.retry_pause_s = retry_pause_s
        self._stopper = Stopper()
        self._member = False
        self._reported: set[int] = set()

    @property
    def ready(self) -> bool:
        """A member of its group now: not stopped, not between a lost bus and the rejoin."""
        return self._member and not self._stopper.stopped

    async def run(self) -> None:
        """Consume until stopped. When the bus itself fails (a broker restart), the member
        leaves, waits and joins again: what it had not committed is delivered again."""
        backoff = Backoff(self.retry_pause_s, MAX_RETRY_PAUSE_S)
        while not self._stopper.stopped:
            try:
                await self._consume()
                return
            except Exception as exc:  # any bus failure means: rejoin later
                pause = backoff.next()
                log.warning(
                    "consumer %s/%s lost the bus (%s); rejoining in %.0f s",
                    self.group,
                    self.topic,
                    exc,
                    pause,
                )
                await self._stopper.sleep(pause)

    async def _consume(self) -> None:
        """Poll, process, commit. A stop lets the batch in hand finish and be committed (unless
        its dependency is down: then it is redelivered to the next owner)."""
        consumer = await self.bus.subscribe(self.topic, self.group)
        self._member = True
        loop = asyncio.get_running_loop()
        lag_at = 0.0
        quiet = False  # nothing behind at the last report, nor polled since: report seldom
        try:
            while not self._stopper.stopped:
                batch = await consumer.poll(self._poll_size(), timeout_s=0.5)
                if batch:
                    self._note_sizes(batch)
                    waiting = Backoff(self.retry_pause_s, MAX_RETRY_PAUSE_S)
                    while not self._stopper.stopped:
                        if await self._process(batch):
                            await consumer.commit(batch)
                            break
                        await self._stopper.sleep(waiting.next())
                if loop.time() >= lag_at or (batch and quiet):
                    caught_up = await self._report_lag(consumer)
                    quiet = caught_up and not batch
                    lag_at = loop.time() + (LAG_IDLE_EVERY_S if quiet else LAG_EVERY_S)
        finally:
            self._member = False
            self._forget_lag()
            with contextlib.suppress(Exception):
                await consumer.close()

    def _poll_size(self) -> int:
        """Records the next poll may take: `max_records`, fewer when they are large."""
        if not self._record_bytes:
            return min(self.max_records, 500)  # sizes unknown: a cautious first poll
        return max(1, min(self.max_records, int(self.max_bytes / self._record_bytes)))

    def _note_sizes(self, batch: Sequence[Message]) -> None:
        """Follow the largest record: this poll's, or the one before fading by a tenth a poll."""
        largest = max(len(m.value) + len(m.key) for m in batch)
        self._record_bytes = max(largest, 0.9 * self._record_bytes)

    async def _report_lag(self, consumer: Consumer) -> bool:
        """Set the lag gauges; True when no partition owned is behind."""
        lag = await consumer.lag()
        for partition, records in lag.items():
            CONSUMER_LAG.labels(self.group, self.topic, str(partition)).set(records)
        for partition in self._reported - lag.keys():
            CONSUMER_LAG.remove(self.group, self.topic, str(partition))
        self._reported = set(lag)
        return not any(lag.values())

    def _forget_lag(self) -> None:
        for partition in self._reported:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.group, self.topic, str(partition))
        self._reported = set()

    def stop(self) -> None:
        """End `run` once the batch in hand is dealt with."""
        self._stopper.stop()

    async def _process(self, batch: Sequence[Message]) -> bool:
        """Handle a batch; True once it is fully dealt with (done or dead-lettered), False when
        a dependency is away and the whole batch must wait."""
        try:
            rejected = list(await self.handler(batch))
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "transient failure on %s (%s): retrying the batch later", self.topic, exc
                )
                return False
            log.exception(
                "handler failed on a batch of %d from %s; retrying one by one",
                len(batch),
                self.topic,
            )
            rejected = []
            for message in batch:
                try:
                    rejected.extend(await self.handler([message]))
                except Exception as exc:
                    if is_transient(exc):
                        log.warning(
                            "transient failure on %s (%s): retrying the batch later",
                            self.topic,
                            exc,
                        )
                        return False
                    rejected.append(Rejected(message, f"{type(exc).__name__}: {exc}"))
        if rejected:
            await self.bus.publish(
                dlq_topic(self.topic), [dead_letter(r.message, r.reason) for r in rejected]
            )
            log.warning(
                "%d message(s) of %s sent to %s", len(rejected), self.topic, dlq_topic(self.topic)
            )
        return True
