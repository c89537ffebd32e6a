"""The consume loop every service uses: poll a batch, handle it, dead-letter what is poison, commit.

A handler returns the messages it refuses (bad data) with a reason; those go to `<topic>.dlq`.
A handler that raises is retried message by message. A message failing with a transient error
(the network, a database that is down: `TransientError` or `OSError`) stops the batch: nothing
is committed and the batch is retried after a pause, so an outage never empties a topic into
the DLQ. Any other failure is a bug or bad data in that one message: it goes to the DLQ with the
error, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson

from energy_tracker.core.bus.base import Consumer, EventBus, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the handler will never be able to process, and why."""

    message: Message
    reason: str


class TransientError(Exception):
    """Raised by a handler when a dependency is down and the batch should be retried as is."""


TRANSIENT: tuple[type[BaseException], ...] = (TransientError, OSError, TimeoutError)

Handler = Callable[[Sequence[Message]], Awaitable[Sequence[Rejected]]]


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def dead_letter(message: Message, reason: str) -> tuple[bytes, bytes]:
    """The DLQ record: the original bytes, the error and where the message came from."""
    body = {
        "v": 1,
        "type": "dead-letter",
        "data": {
            "error": reason,
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
            "value_b64": base64.b64encode(message.value).decode(),
        },
    }
    return message.key, orjson.dumps(body)


class ConsumeLoop:
    """Runs one handler over one topic for one consumer group until stopped."""

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        group: str,
        handler: Handler,
        *,
        max_records: int = 5000,
        retry_pause_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.handler = handler
        self.max_records = max_records
        self.retry_pause_s = retry_pause_s
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None

    async def run(self) -> None:
        self._consumer = await self.bus.subscribe(self.topic, self.group)
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.poll(self.max_records, timeout_s=0.5)
                if not batch:
                    continue
                while not self._stopping.is_set():
                    if await self._process(batch):
                        await self._consumer.commit(batch)
                        break
                    await asyncio.sleep(self.retry_pause_s)
        finally:
            await self._consumer.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _process(self, batch: Sequence[Message]) -> bool:
        """Handle a batch; True once it is fully dealt with (done or dead-lettered)."""
        try:
            rejected = list(await self.handler(batch))
        except Exception:
            log.exception(
                "handler failed on a batch of %d from %s; retrying one by one",
                len(batch),
                self.topic,
            )
            rejected = []
            for message in batch:
                try:
                    rejected.extend(await self.handler([message]))
                except TRANSIENT as exc:
                    log.warning(
                        "transient failure on %s (%s): retrying the batch later", self.topic, exc
                    )
                    return False
                except Exception as exc:
                    rejected.append(Rejected(message, f"{type(exc).__name__}: {exc}"))
        if rejected:
            await self.bus.publish(
                dlq_topic(self.topic), [dead_letter(r.message, r.reason) for r in rejected]
            )
            log.warning(
                "%d message(s) of %s sent to %s", len(rejected), self.topic, dlq_topic(self.topic)
            )
        return True
