"""Webhook receivers that misbehave on purpose (real sockets on loopback): one that drips its
answer, one that answers gigabytes, a closed port, and a host name that resolves to a refused
address. A send holds its slot no longer than the timeout, reads no body, and what the rule's
owner is told names no address and does not tell a closed port from a silent one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.service.alerting import Alerting

TIMEOUT_S = 1.0


class RawReceiver:
    """A TCP server answering each request with `answer(writer)`; counts the bytes it sent."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sent = 0
        self.requests = 0
        self.hosts: list[str] = []

    async def __aenter__(self) -> RawReceiver:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("host:"):
                    self.hosts.append(line.split(":", 1)[1].strip())
            try:
                await self.answer(self, writer)
            except (ConnectionError, OSError):
                pass  # the client hung up: what it should do
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


async def drip(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    # A byte every 0.3 s: each read waits less than the timeout, the whole answer far longer.
    for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
        await receiver.write(writer, bytes([byte]))
        await asyncio.sleep(0.3)


async def huge(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\ncontent-length: 5000000000\r\n\r\n")
    chunk = b"\0" * (1 << 20)
    for _ in range(5000):
        await receiver.write(writer, chunk)


@pytest.fixture
async def hooked(alerting: Alerting) -> AsyncIterator[Alerting]:
    await alerting.use_dispatcher(smtp=None, deny_private=False, timeout_s=TIMEOUT_S)
    yield alerting


async def first_attempt(alerting: Alerting, url: str) -> tuple[str, int | None, str | None]:
    await alerting.rule(channels=[{"type": "webhook", "url": url, "secret": "s"}])
    await alerting.readings((-1, 2500.0))
    (delivery,) = await alerting.notify(lambda ds: ds[0].attempts >= 1, rounds=20)
    (attempt,) = (await alerting.store.deliveries.attempts_of([delivery.id]))[delivery.id]
    return delivery.status, attempt.status_code, attempt.error


async def test_a_dripping_receiver_holds_a_send_no_longer_than_the_timeout(
    hooked: Alerting,
) -> None:
    async with RawReceiver(drip) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        status, code, error = await first_attempt(hooked, url)
    assert (status, code, error) == ("pending", None, "no answer within 1 s")
    assert receiver.sent < 20  # it was cut off long before its 39 bytes


async def test_a_receiver_answering_gigabytes_is_not_read(hooked: Alerting) -> None:
    async with RawReceiver(huge) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        status, code, error = await first_attempt(hooked, url)
        await asyncio.sleep(0.2)
    assert (status, code, error) == ("delivered", 200, None)
    assert receiver.sent < 100 << 20  # of 5 GB offered; the socket buffers hold the rest


async def test_a_closed_port_reads_like_a_silent_one(hooked: Alerting) -> None:
    async with RawReceiver(drip) as receiver:
        closed = receiver.port
    status, code, error = await first_attempt(hooked, f"http://127.0.0.1:{closed}/hook")
    assert (status, code, error) == ("pending", None, "no answer within 1 s")


async def test_a_host_name_is_sent_to_the_address_checked(hooked: Alerting) -> None:
    async def ok(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
        await receiver.write(writer, b"HTTP/1.1 204 No Content\r\n\r\n")

    async with RawReceiver(ok) as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        assert await first_attempt(hooked, url) == ("delivered", 204, None)
    # The connection went to 127.0.0.1 (the receiver listens nowhere else), asking for the
    # name the rule gave.
    assert receiver.hosts == [f"localhost:{receiver.port}"]


async def test_a_host_name_resolving_to_a_refused_address_is_refused_unnamed(
    alerting: Alerting,
) -> None:
    await alerting.use_dispatcher(smtp=None, deny_private=True, timeout_s=TIMEOUT_S)
    async with RawReceiver(drip) as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        await alerting.rule(channels=[{"type": "webhook", "url": url, "secret": "s"}])
        await alerting.readings((-1, 2500.0))
        (delivery,) = await alerting.notify(lambda ds: ds[0].status == "failed")
    assert receiver.requests == 0
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("refused: localhost resolves to a loopback or private")
    assert "127.0.0.1" not in delivery.last_error and "::1" not in delivery.last_error
