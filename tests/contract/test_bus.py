"""The event backbone contract, one suite for every adapter: embedded (SQLite) and kafka (Tansu).

The kafka leg shares one broker per session, so each test works on its own topic and group.
Group joins on Tansu take about half the session timeout (~5 s), hence the generous bounds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from energy_tracker.core.bus.base import Consumer, EventBus, Message
from energy_tracker.core.bus.embedded import EmbeddedBus, EmbeddedConsumer
from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.bus.runner import ConsumeLoop, Rejected, dlq_topic
from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl

PARTITIONS = 8
TEST_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Names:
    topic: str
    group: str


@pytest.fixture
def names() -> Names:
    suffix = uuid.uuid4().hex[:12]
    return Names(topic=f"contract-{suffix}", group=f"group-{suffix}")


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return f"embedded:///{tmp_path}/data/bus.db"
    return request.getfixturevalue("kafka_url")


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[EventBus]:
    bus = bus_from_url(bus_url, PARTITIONS)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


async def drain(consumer: Consumer, want: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until at least `want` messages arrived; fail saying how many came otherwise."""
    got: list[Message] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < want:
                got += await consumer.poll(1000, timeout_s=0.5)
    except TimeoutError:
        pytest.fail(f"received {len(got)} of {want} messages within {timeout_s:g} s")
    return got


async def quiet(consumer: Consumer, for_s: float = 1.0) -> list[Message]:
    """Whatever else arrives within `for_s` (expected: nothing)."""
    extra: list[Message] = []
    deadline = time.monotonic() + for_s
    while (left := deadline - time.monotonic()) > 0:
        extra += await consumer.poll(1000, timeout_s=left)
    return extra


def values(messages: Sequence[Message]) -> list[bytes]:
    return [m.value for m in messages]


async def test_round_trip(bus: EventBus, names: Names) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        records = [(b"dev-1", b"a"), (b"dev-2", b"b"), (b"dev-1", b"c")]
        await bus.publish(names.topic, records)
        consumer = await bus.subscribe(names.topic, names.group)
        got = await drain(consumer, len(records))
        assert sorted((m.key, m.value) for m in got) == sorted(records)
        assert {m.topic for m in got} == {names.topic}
        assert all(0 <= m.partition < PARTITIONS for m in got)
        assert len({(m.partition, m.offset) for m in got}) == len(records)
        assert await quiet(consumer, 0.5) == []
        await consumer.close()


async def test_lag_counts_what_an_owned_partition_holds_past_the_position(
    bus: EventBus, names: Names
) -> None:
    """Five records of one key, one partition; a member that has taken one of them is 4
    behind on that partition, then 0 once it has taken the rest (committed or not)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        await bus.publish(names.topic, [(b"dev-1", str(i).encode()) for i in range(5)])
        consumer = await bus.subscribe(names.topic, names.group)
        first: list[Message] = []
        while not first:
            first = await consumer.poll(1, timeout_s=0.5)
        partition = first[0].partition
        lag = await consumer.lag()
        assert lag[partition] == 4
        assert all(behind == 0 for p, behind in lag.items() if p != partition)
        await drain(consumer, 4)
        assert (await consumer.lag())[partition] == 0
        await consumer.close()


async def test_each_key_keeps_its_order(bus: EventBus, names: Names) -> None:
    keys, per_key = 200, 50
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        # Ten publishes, each interleaving every key, so order must hold within and across calls.
        for round_ in range(10):
            await bus.publish(
                names.topic,
                [
                    (f"dev-{k}".encode(), f"{k}:{seq}".encode())
                    for seq in range(round_ * per_key // 10, (round_ + 1) * per_key // 10)
                    for k in range(keys)
                ],
            )
        consumer = await bus.subscribe(names.topic, names.group)
        got = await drain(consumer, keys * per_key)
        seqs: dict[bytes, list[int]] = defaultdict(list)
        partitions: dict[bytes, set[int]] = defaultdict(set)
        for m in got:
            seqs[m.key].append(int(m.value.split(b":")[1]))
            partitions[m.key].add(m.partition)
        assert len(seqs) == keys
        assert all(s == list(range(per_key)) for s in seqs.values())
        assert all(len(p) == 1 for p in partitions.values())
        await consumer.close()


async def test_concurrent_one_record_publishes_are_all_kept_in_order_per_key(
    bus: EventBus, names: Names
) -> None:
    """Live devices: thousands of callers at once, each publishing one record, as HTTP requests
    do. Every publish that returned is consumed, and a key's records, published one after
    another by their own caller, keep that order (group commit folds them into shared writes:
    a few dozen durable writes, a SQLite transaction or a Kafka produce with acks=all each,
    not one per publish)."""
    keys, per_key = 500, 6
    writes = 0
    group_commit = bus._group_commit  # type: ignore[attr-defined]
    write = group_commit._write

    async def counted(batch: dict[str, list[tuple[bytes, bytes]]]) -> None:
        nonlocal writes
        writes += 1
        await write(batch)

    group_commit._write = counted

    async def device(k: int) -> None:
        for seq in range(per_key):
            await bus.publish(names.topic, [(f"dev-{k}".encode(), f"{k}:{seq}".encode())])

    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        await asyncio.gather(*(device(k) for k in range(keys)))
        assert writes <= keys * per_key // 20, writes
        consumer = await bus.subscribe(names.topic, names.group)
        got = await drain(consumer, keys * per_key)
        seqs: dict[bytes, list[int]] = defaultdict(list)
        for m in got:
            seqs[m.key].append(int(m.value.split(b":")[1]))
        assert len(got) == keys * per_key
        assert len(seqs) == keys
        assert all(s == list(range(per_key)) for s in seqs.values())
        assert await quiet(consumer, 0.5) == []
        await consumer.close()


async def test_uncommitted_records_go_to_the_next_member(bus: EventBus, names: Names) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        records = [(f"dev-{i}".encode(), f"v{i}".encode()) for i in range(40)]
        await bus.publish(names.topic, records)
        first = await bus.subscribe(names.topic, names.group)
        assert len(await drain(first, len(records))) == len(records)
        await first.close()  # dies without committing
        second = await bus.subscribe(names.topic, names.group)
        again = await drain(second, len(records))
        assert sorted(values(again)) == sorted(v for _, v in records)
        await second.close()


async def test_next_member_resumes_after_the_commit(bus: EventBus, names: Names) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        # One key, so one partition and a total order to cut at.
        await bus.publish(names.topic, [(b"dev-1", f"v{i}".encode()) for i in range(20)])
        first = await bus.subscribe(names.topic, names.group)
        got = await drain(first, 20)
        assert values(got) == [f"v{i}".encode() for i in range(20)]
        await first.commit(got[:12])
        await first.close()
        await bus.publish(names.topic, [(b"dev-1", b"v20")])
        second = await bus.subscribe(names.topic, names.group)
        rest = await drain(second, 9)
        rest += await quiet(second, 0.5)
        assert values(rest) == [f"v{i}".encode() for i in range(12, 21)]
        await second.close()


async def test_group_members_share_the_partitions(bus: EventBus, names: Names) -> None:
    """Two members: together they get every record and, once the group is stable, each owns a
    disjoint, non-empty share of the partitions."""
    keys = [f"dev-{i}".encode() for i in range(64)]
    window_s = 1.5
    published: set[bytes] = set()
    seen: dict[int, list[tuple[float, int, bytes]]] = {0: [], 1: []}
    seen_by_any: set[bytes] = set()
    stop_producing = asyncio.Event()
    caught_up = asyncio.Event()
    stop_consuming = asyncio.Event()

    async def produce() -> None:
        round_ = 0
        while not stop_producing.is_set():
            batch = [(k, f"{round_}:{k.decode()}".encode()) for k in keys]
            await bus.publish(names.topic, batch)
            published.update(v for _, v in batch)
            round_ += 1
            await asyncio.sleep(0.05)

    async def consume(member: int, consumer: Consumer) -> None:
        while not stop_consuming.is_set():
            batch = await consumer.poll(200, timeout_s=0.2)
            now = time.monotonic()
            seen[member].extend((now, m.partition, m.value) for m in batch)
            seen_by_any.update(values(batch))
            if stop_producing.is_set() and published <= seen_by_any:
                caught_up.set()
            await consumer.commit(batch)

    def shares(since: float) -> list[set[int]]:
        return [{p for t, p, _ in seen[i] if t >= since} for i in (0, 1)]

    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic])
        members = await asyncio.gather(
            bus.subscribe(names.topic, names.group), bus.subscribe(names.topic, names.group)
        )
        tasks = [asyncio.create_task(produce())]
        tasks += [asyncio.create_task(consume(i, c)) for i, c in enumerate(members)]
        started = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if time.monotonic() - started < window_s:
                continue
            first, second = shares(time.monotonic() - window_s)
            if first and second and not first & second and first | second == set(range(8)):
                break
            assert time.monotonic() - started < 60, f"no stable split; last: {first} / {second}"
        stop_producing.set()
        await tasks[0]
        await caught_up.wait()
        stop_consuming.set()
        await asyncio.gather(*tasks[1:])
        for consumer in members:
            await consumer.close()

    each = [{v for _, _, v in seen[i]} for i in (0, 1)]
    assert each[0] and each[1]
    assert each[0] < published and each[1] < published


async def test_poison_message_is_dead_lettered(bus: EventBus, names: Names) -> None:
    """The poison message goes to `<topic>.dlq` with its bytes, error and source offset; the
    partition moves on and what follows is processed and committed."""
    sent = [f"ok-{i}".encode() for i in range(10)]
    sent[4] = b"poison"
    handled: set[bytes] = set()
    all_good_handled = asyncio.Event()
    poison: list[Message] = []

    async def handler(batch: Sequence[Message]) -> Sequence[Rejected]:
        for m in batch:
            if m.value == b"poison":
                poison.append(m)
                raise ValueError("cannot parse this reading")
        handled.update(values(batch))
        if handled == set(sent) - {b"poison"}:
            all_good_handled.set()
        return []

    async with asyncio.timeout(TEST_TIMEOUT_S):
        await bus.ensure_topics([names.topic, dlq_topic(names.topic)])
        await bus.publish(names.topic, [(b"dev-1", v) for v in sent])
        loop = ConsumeLoop(bus, names.topic, names.group, handler, retry_pause_s=0.1)
        running = asyncio.create_task(loop.run())
        dead = await bus.subscribe(dlq_topic(names.topic), f"{names.group}-dlq")
        (letter,) = await drain(dead, 1)
        await dead.close()
        await all_good_handled.wait()
        loop.stop()
        await running

        body = orjson.loads(letter.value)
        assert letter.key == b"dev-1"
        assert body["type"] == "dead-letter"
        assert base64.b64decode(body["data"]["value_b64"]) == b"poison"
        assert "ValueError: cannot parse this reading" in body["data"]["error"]
        assert body["data"]["source"] == {
            "topic": names.topic,
            "partition": poison[0].partition,
            "offset": poison[0].offset,
        }

        await bus.publish(names.topic, [(b"dev-1", b"tail")])
        after = await bus.subscribe(names.topic, names.group)
        tail = await drain(after, 1)
        tail += await quiet(after, 0.5)
        assert values(tail) == [b"tail"]
        await after.close()


# -- embedded only: durability and groups across processes --------------------------------------

_PUBLISHER = """
import asyncio, sys
from energy_tracker.core.bus.embedded import EmbeddedBus

async def main():
    bus = EmbeddedBus(sys.argv[1], 8)
    await bus.start()
    batch = 0
    while True:
        await bus.publish("durable", [(f"dev-{k}".encode(), f"{batch}:{k}".encode())
                                      for k in range(100)])
        batch += 1
        print(batch, flush=True)

asyncio.run(main())
"""


async def test_embedded_keeps_what_publish_acknowledged_through_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    async with asyncio.timeout(TEST_TIMEOUT_S):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PUBLISHER, path, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        acked = 0
        while acked < 30:
            line = await child.stdout.readline()
            assert line, "publisher exited early"
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        for line in (await child.stdout.read()).split():
            acked = int(line)  # lines printed before the kill are acknowledged too
        assert await child.wait() == -signal.SIGKILL

        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        bus = EmbeddedBus(path, 8)
        await bus.start()
        consumer = await bus.subscribe("durable", "reader")
        got = await drain(consumer, acked * 100)
        got += await quiet(consumer, 0.3)
        await bus.stop()

    by_key: dict[bytes, list[int]] = defaultdict(list)
    for m in got:
        by_key[m.key].append(int(m.value.split(b":")[0]))
    assert len(by_key) == 100
    for batches in by_key.values():
        # Every acknowledged batch is there, in order; one more may have committed unreported.
        assert batches[:acked] == list(range(acked))
        assert batches == list(range(len(batches)))
        assert len(batches) <= acked + 1


_MEMBER = """
import asyncio, sys
from energy_tracker.core.bus.embedded import EmbeddedBus

async def main():
    bus = EmbeddedBus(sys.argv[1], 8, session_timeout_s=1.0)
    await bus.start()
    consumer = await bus.subscribe("shared", "group")
    got = 0
    while got < 40:
        got += len(await consumer.poll(1000, timeout_s=0.5))
    print(got, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_embedded_dead_process_partitions_move_after_session_timeout(
    tmp_path: Path,
) -> None:
    """A member process killed mid-work stops heartbeating; once the session timeout passes, a
    member in another process takes its partitions and gets the uncommitted records again."""
    path = str(tmp_path / "bus.db")
    async with asyncio.timeout(TEST_TIMEOUT_S):
        bus = EmbeddedBus(path, 8, session_timeout_s=1.0)
        await bus.start()
        await bus.publish("shared", [(f"dev-{i}".encode(), f"v{i}".encode()) for i in range(40)])
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _MEMBER, path, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        assert int(await child.stdout.readline()) == 40  # it owns every partition, uncommitted
        consumer = await bus.subscribe("shared", "group")
        assert isinstance(consumer, EmbeddedConsumer)
        assert await consumer.poll(1000, timeout_s=0.3) == []  # the live member keeps them
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            (last_beat,) = conn.execute(
                "SELECT max(heartbeat) FROM members WHERE member != ?", (consumer.member,)
            ).fetchone()
        got = await drain(consumer, 1, timeout_s=10)
        # Not before the dead member's session ended (by the clock its heartbeat was written
        # with): an order of events, not a duration.
        assert time.time() >= last_beat + bus.session_timeout_s
        got += await drain(consumer, 40 - len(got), timeout_s=10)
        assert sorted(values(got)) == sorted(f"v{i}".encode() for i in range(40))
        await bus.stop()


async def test_embedded_members_in_two_processes_split_the_partitions(tmp_path: Path) -> None:
    """Two buses on one file stand for two processes: they split the partitions and together
    read every record once."""
    path = str(tmp_path / "bus.db")
    async with asyncio.timeout(TEST_TIMEOUT_S):
        buses = [EmbeddedBus(path, 8), EmbeddedBus(path, 8)]
        for b in buses:
            await b.start()
        first = await buses[0].subscribe("shared", "group")
        second = await buses[1].subscribe("shared", "group")
        await first.poll(10, timeout_s=0.5)  # the first member releases half of its partitions
        await second.poll(10, timeout_s=0.5)  # ... and the second claims them
        records = [(f"dev-{i}".encode(), f"v{i}".encode()) for i in range(400)]
        await buses[0].publish("shared", records)
        got: list[list[Message]] = [[], []]
        async with asyncio.timeout(15):
            while len(got[0]) + len(got[1]) < len(records):
                got[0] += await first.poll(1000, timeout_s=0.1)
                got[1] += await second.poll(1000, timeout_s=0.1)
        got[0] += await quiet(first, 0.3)
        got[1] += await quiet(second, 0.3)
        assert sorted(values(got[0] + got[1])) == sorted(v for _, v in records)
        parts = [{m.partition for m in g} for g in got]
        assert parts[0] and parts[1] and not parts[0] & parts[1]
        assert parts[0] | parts[1] == set(range(8))
        for b in buses:
            await b.stop()


def data_version(conn: sqlite3.Connection) -> int:
    """Changes each time another connection commits to the file."""
    return conn.execute("PRAGMA data_version").fetchone()[0]


async def test_embedded_idle_members_write_nothing(tmp_path: Path) -> None:
    """Once a member has committed all it read it writes nothing, for many session timeouts,
    and is not expired for it: it is judged by its process. Another process's records still
    wake it at once."""
    path = str(tmp_path / "bus.db")
    async with asyncio.timeout(TEST_TIMEOUT_S):
        bus = EmbeddedBus(path, 8, session_timeout_s=0.4)
        other = EmbeddedBus(path, 8, session_timeout_s=0.4)  # another process's bus
        await bus.start()
        await other.start()
        try:
            consumer = await bus.subscribe("quiet", "group")
            assert isinstance(consumer, EmbeddedConsumer)
            await bus.publish("quiet", [(f"dev-{i}".encode(), b"v") for i in range(20)])
            await consumer.commit(await drain(consumer, 20))
            with contextlib.closing(sqlite3.connect(path)) as outside:
                before = data_version(outside)
                assert await quiet(consumer, 1.6) == []  # four session timeouts, polling
                assert data_version(outside) == before
                (member,) = outside.execute("SELECT member FROM members").fetchall()
            assert member == (consumer.member,)  # still the group's only member

            await other.publish("quiet", [(b"dev-1", b"late")])
            # Woken by the watcher, not by the end of the poll's hour-long wait (the bound
            # only keeps a broken watcher from hanging the suite).
            late = await asyncio.wait_for(consumer.poll(10, timeout_s=3600), 60)
            assert values(late) == [b"late"]
        finally:
            await other.stop()
            await bus.stop()


_IDLE_MEMBER = """
import asyncio, sys
from energy_tracker.core.bus.embedded import EmbeddedBus

async def main():
    bus = EmbeddedBus(sys.argv[1], 8, session_timeout_s=1.0)
    await bus.start()
    consumer = await bus.subscribe("shared", "group")
    got = 0
    while True:
        batch = await consumer.poll(1000, timeout_s=0.5)
        await consumer.commit(batch)
        if batch:
            got += len(batch)
            print(got, flush=True)

asyncio.run(main())
"""


async def test_embedded_idle_member_lives_as_long_as_its_process(tmp_path: Path) -> None:
    """An idle member keeps its partitions past the session timeout while its process runs,
    and loses them once the process is killed."""
    path = str(tmp_path / "bus.db")
    async with asyncio.timeout(TEST_TIMEOUT_S):
        bus = EmbeddedBus(path, 8, session_timeout_s=1.0)
        await bus.start()
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _IDLE_MEMBER, path, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        try:
            records = [(f"dev-{i}".encode(), f"v{i}".encode()) for i in range(40)]
            await bus.publish("shared", records)
            assert int(await child.stdout.readline()) == 40  # all its partitions, committed
            consumer = await bus.subscribe("shared", "group")
            assert await quiet(consumer, 2.5) == []  # both idle, past two session timeouts

            await bus.publish("shared", records)
            mine = await drain(consumer, 1)
            mine += await quiet(consumer, 1.0)
            assert 0 < len(mine) < 40  # the idle child kept its share and read it
            assert int(await child.stdout.readline()) == 80 - len(mine)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            await child.wait()
        await bus.publish("shared", records)
        assert sorted(values(await drain(consumer, 40, timeout_s=10))) == sorted(
            v for _, v in records
        )
        await bus.stop()


async def test_embedded_topics_no_service_reads_keep_only_their_newest_records(
    tmp_path: Path,
) -> None:
    bus = EmbeddedBus(
        str(tmp_path / "bus.db"), 1, unread_topics=["readings.dlq", "alerts"], unread_keep=3
    )
    await bus.start()
    try:
        await bus.publish("readings.dlq", [(b"k", b"%d" % i) for i in range(10)])
        await bus.publish("alerts", [(b"k", b"%d" % i) for i in range(5)])
        # A topic a service reads, whose group has not come yet (its service starts later):
        # nothing of it may go, however much there is.
        await bus.publish("readings", [(b"k", b"%d" % i) for i in range(10)])
        assert await bus.trim() == 7 + 2  # offsets 0..6 of the DLQ, 0..1 of "alerts"
        dlq = await bus.subscribe("readings.dlq", "inspector")
        assert values(await drain(dlq, 3)) == [b"7", b"8", b"9"]
        late = await bus.subscribe("readings", "late")
        assert values(await drain(late, 10)) == [b"%d" % i for i in range(10)]

        # Once a group reads an unread topic, only what it has committed goes, as for any.
        await bus.publish("readings.dlq", [(b"k", b"%d" % i) for i in range(10, 16)])
        assert await bus.trim() == 0  # "inspector" is a member at offset 0: it keeps all
        await dlq.commit(await drain(dlq, 6))  # offsets 10..15: it has read everything
        assert await bus.trim() == 8  # 7..14; the last record stays, carrying the next offset
        alerts = await bus.subscribe("alerts", "watcher")
        assert values(await drain(alerts, 3)) == [b"2", b"3", b"4"]
    finally:
        await bus.stop()


# -- configuration ------------------------------------------------------------------------------


async def test_embedded_log_is_trimmed_below_what_every_reader_committed(tmp_path: Path) -> None:
    bus = EmbeddedBus(str(tmp_path / "bus.db"), 1)  # one partition: offsets are 0..n-1
    await bus.start()
    try:
        await bus.publish("readings", [(b"k", b"%d" % i) for i in range(10)])
        await bus.publish("readings.dlq", [(b"k", b"poison")])
        ahead = await bus.subscribe("readings", "ahead")
        behind = await bus.subscribe("readings", "behind")
        assert await bus.trim() == 0  # members that committed nothing are at the start
        await ahead.commit(await drain(ahead, 10))
        await behind.commit((await drain(behind, 10))[:4])  # "behind" committed offsets 0..3
        assert await bus.trim() == 4
        await behind.close()

        # "behind" is away, not gone: it resumes where it committed, nothing lost. A new group
        # starts at the oldest record kept.
        behind = await bus.subscribe("readings", "behind")
        assert values(await drain(behind, 6)) == [b"%d" % i for i in range(4, 10)]
        newcomer = await bus.subscribe("readings", "newcomer")
        assert values(await drain(newcomer, 6))[0] == b"4"
        assert await bus.trim() == 0  # its position, while it is a member, is the start
        await newcomer.close()  # gone without a commit: like Kafka, nothing is kept for it

        # A member that died without leaving, in a group that never came back, pins nothing.
        with contextlib.closing(sqlite3.connect(tmp_path / "bus.db")) as conn, conn:
            conn.execute("INSERT INTO members VALUES ('crashed', 1, 'gone', 0.0)")

        # When every reader has committed everything, the last record stays: it carries the
        # next offset, so new records continue the sequence instead of reusing offsets.
        await behind.commit([Message("readings", 0, 9, b"k", b"9")])
        assert await bus.trim() == 5  # offsets 4..8
        await bus.publish("readings", [(b"k", b"10")])
        (fresh,) = await drain(ahead, 1)
        assert (fresh.offset, fresh.value) == (10, b"10")
        dlq = await bus.subscribe("readings.dlq", "inspector")
        assert values(await drain(dlq, 1)) == [b"poison"]  # nobody reads a DLQ: all kept
    finally:
        await bus.stop()


def test_unknown_bus_url_is_refused() -> None:
    with pytest.raises(UnsupportedUrl, match="ET_BUS_URL=amqp://x"):
        bus_from_url("amqp://x", PARTITIONS)
    with pytest.raises(UnsupportedUrl):
        bus_from_url("embedded://", PARTITIONS)


async def test_unopenable_embedded_file_names_the_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    url = f"embedded:///{blocker}/bus.db"
    with pytest.raises(BackendUnavailable, match="ET_BUS_URL=embedded://"):
        await bus_from_url(url, PARTITIONS).start()


async def test_unreachable_kafka_fails_fast_naming_the_url() -> None:
    # A guard against hanging (retrying for ever), not a speed check: the refusal comes at once.
    with pytest.raises(BackendUnavailable, match=r"ET_BUS_URL=kafka://127\.0\.0\.1:1 "):
        async with asyncio.timeout(60):
            await bus_from_url("kafka://127.0.0.1:1", PARTITIONS).start()
