"""The embedded event backbone: a durable partitioned log in one SQLite file.

It keeps the Kafka contract without a broker, so a household box runs the same services as a
provider's cluster: keyed records land in `crc32(key) % partitions` and keep their order there,
offsets are committed per consumer group, and several processes on one host share a group.

Why it is shaped this way:

- WAL with `synchronous=NORMAL`: a committed transaction is in the WAL file before `publish`
  returns, so a killed process (kill -9) loses nothing it acknowledged; only a power cut can
  drop the last transactions, which is the trade Kafka makes with page-cache writes as well.
- Messages are keyed `(topic_id, partition, seq)` in a WITHOUT ROWID table: integer keys and
  appends at the end of each partition's range keep inserts near 400k rows/s (LIMITS.md), and a
  consumer reads its partition as one range scan. `seq` is the message's offset.
- Group membership lives in the file (member id, heartbeat) so processes need no other channel.
  Partition `p` belongs to the live member `sorted(ids)[p % n]`. Ownership is claimed in the
  `owners` table and only ever taken over when the previous owner released it (on its next poll)
  or died (no heartbeat for the session timeout), so two live members never read one partition.
  A newly owned partition starts at the group's committed offset.
- SQLite calls block, so each bus runs them on two dedicated threads, each with its own
  connection: the writer (appends, offset commits, membership, heartbeats, the trim) and the
  reader (consumers' fetches, lag, the watcher). In WAL a reader never blocks the writer nor
  waits for it, so a consumer's fetch does not queue behind the appends of a busy ingestion, and
  the appends do not queue behind the fetches. A consumer's own state changes only between its
  awaits (`poll` syncs its membership on the writer, then fetches on the reader), so the two
  threads never change one consumer's positions at once.
- One writer per log, with group commit (`GroupCommit`): what many callers publish while the
  previous append is being written goes into the next append, one transaction for all of it,
  so one-reading requests do not each pay a transaction and queue behind each other.
- Idle costs nothing: a consumer waits for an event, set by a publish in this process or, for
  other processes' commits, by one watcher per bus that reads SQLite's `data_version` (a
  counter in shared memory, no disk read). A member heartbeats only while it holds records it
  has not committed; once it has committed all it read it marks itself idle (heartbeat
  `+inf`), and an idle member counts as alive as long as its process does (its id starts with
  its pid and the process's start time). So with nothing arriving, nothing is written.
- The log is trimmed (`trim`, every minute): what every group that reads a topic has committed
  is deleted, so a household box does not keep every reading twice, forever. A group keeps its
  records until it commits them, however long it is away; a group that is gone for good must be
  deleted from `committed` by hand. A topic no service consumes (the DLQs, `alert-events`:
  `unread_topics`) keeps its newest `unread_keep` records per partition while no group reads
  it. Freed pages are reused, not returned to the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import count, repeat
from pathlib import Path
from typing import TypeVar

from energy_tracker.core.bus.base import Consumer, EventBus, Message
from energy_tracker.core.bus.group_commit import GroupCommit
from energy_tracker.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    topic_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (topic_id, part, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS committed (
    grp TEXT NOT NULL,
    topic_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    PRIMARY KEY (grp, topic_id, part)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL,
    topic_id INTEGER NOT NULL,
    member TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (grp, topic_id, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (
    grp TEXT NOT NULL,
    topic_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (grp, topic_id, part)
) WITHOUT ROWID;
"""

_BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's write transaction before giving up."""

_BEGIN_TRY_MS = 1
_BEGIN_PAUSE_S = 0.0005
"""How a write waits for another process's write transaction (`EmbeddedBus._begin`)."""

_TRIM_EVERY_S = 60.0
_TRIM_AT_MOST = 100_000
"""Records deleted per partition and pass: a long backlog goes in steps, so the write lock is
never held for long."""

UNREAD_KEEP = 100_000
"""Records per partition kept of a topic no group reads (ET_BUS_UNREAD_KEEP)."""

_SET_HEARTBEAT = "UPDATE members SET heartbeat = ? WHERE grp = ? AND topic_id = ? AND member = ?"

_WATCH_MIN_S = 0.05
_WATCH_MAX_S = 0.4
"""How often the watcher looks for other processes' commits (their records' added latency):
at the shortest while they come, backing off to the longest while none do."""

IDLE = math.inf
"""The heartbeat of a member that has committed everything it read: judged by its process."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None when there is no such
    process or no /proc to ask: with the pid it names one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _member_id() -> str:
    """`pid.start.random`: an idle member's liveness is its process's (see `_alive`)."""
    pid = os.getpid()
    return f"{pid}.{_process_start(pid) or 'x'}.{uuid.uuid4().hex}"


def _alive(member: str) -> bool:
    """Whether the process of an idle member still runs. A member id without a process start
    (no /proc) cannot be judged so: it never goes idle (`EmbeddedConsumer._may_idle`)."""
    pid, _, rest = member.partition(".")
    start = rest.partition(".")[0]
    return pid.isdigit() and start not in ("", "x") and _process_start(int(pid)) == start


class EmbeddedBus(EventBus):
    """A durable local log in the SQLite file at `path`, shared by the processes of one host.

    Every member judges the others' heartbeats by its own `session_timeout_s`, so all processes
    of a group should use the same value. `rebalance_check_s` bounds how stale a member's view of
    the group may be while it keeps reading: it is how fast partitions move when members come
    and go.
    """

    def __init__(
        self,
        path: str,
        partitions: int = 8,
        *,
        session_timeout_s: float = 10.0,
        rebalance_check_s: float = 0.2,
        unread_topics: Collection[str] = (),
        unread_keep: int = UNREAD_KEEP,
    ) -> None:
        self.path = path
        self.unread_topics = frozenset(unread_topics)
        self.unread_keep = max(1, unread_keep)
        self.url = f"embedded:///{path}"
        self.partitions = partitions
        self.session_timeout_s = session_timeout_s
        self.rebalance_check_s = rebalance_check_s
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._topics: dict[str, tuple[int, int]] = {}
        self._consumers: set[EmbeddedConsumer] = set()
        self._trimming: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._group_commit = GroupCommit(self._write)
        # Set and replaced after every publish here or commit elsewhere: consumers wake at once.
        self.new_records = asyncio.Event()
        # Bumped with new_records: a consumer that saw no records at one value need not look
        # again (nor resync its group) until it moves.
        self.changes = 0

    # -- thread plumbing --------------------------------------------------------------------

    async def in_thread(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking SQLite call on the writer thread without blocking the event loop."""
        if self._executor is None:
            raise RuntimeError("EmbeddedBus is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def in_reader(self, fn: Callable[..., T], *args: object) -> T:
        """Run a read-only SQLite call on the reader thread (`read_conn`)."""
        if self._reader is None:
            raise RuntimeError("EmbeddedBus is not started")
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    @property
    def read_conn(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise RuntimeError("EmbeddedBus is not started")
        return self._read_conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("EmbeddedBus is not started")
        return self._conn

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction; BEGIN IMMEDIATE takes the lock before any read,
        so offsets read inside are not raced by another process."""
        conn = self.conn
        self._begin(conn)
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, trying again every millisecond while another process writes.

        SQLite's own busy handler sleeps longer and longer between tries (up to 100 ms), and
        the lock goes to whoever asks at the instant it is free: with `up`'s two processes
        writing one log, the one that publishes batch after batch kept it, and the usage
        consumer's offset commits and usage events waited seconds behind it. Trying every
        millisecond keeps such a wait to about one of the other's transactions.
        """
        conn.execute(f"PRAGMA busy_timeout={_BEGIN_TRY_MS}")
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                    if time.monotonic() > deadline:
                        raise
                time.sleep(_BEGIN_PAUSE_S)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")

    # -- EventBus ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-bus")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-bus-read")
        try:
            await self.in_thread(self._open)
            await self.in_reader(self._open_reader)
        except (OSError, sqlite3.Error) as exc:
            await self._shut()
            raise BackendUnavailable("ET_BUS_URL", self.url, str(exc)) from None
        self._trimming = asyncio.create_task(self._trim_periodically(), name="bus-trim")
        self._watching = asyncio.create_task(self._watch(), name="bus-watch")

    def changed(self) -> None:
        """Wake every consumer of this process: there may be new records or members."""
        self.changes += 1
        self.new_records.set()
        self.new_records = asyncio.Event()

    async def _watch(self) -> None:
        """Wake the consumers when another connection (another process) has committed.

        Asked on the reader's connection, so it never waits for a write: PRAGMA data_version
        changes with every other connection's commit, this bus's writer's too (their consumers
        are then woken once more, which finds nothing new or what a publish already signalled)."""
        last = None
        pause = _WATCH_MIN_S
        while True:
            await asyncio.sleep(pause)
            try:
                version = await self.in_reader(self._data_version)
            except sqlite3.Error as exc:
                log.warning("watching the bus log failed: %s", exc)
                continue
            if last is not None and version != last:
                self.changed()
                pause = _WATCH_MIN_S
            else:
                pause = min(pause * 2, _WATCH_MAX_S)
            last = version

    def _data_version(self) -> int:
        (version,) = self.read_conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def _open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_reader(self) -> None:
        """The reader's connection, once the writer has made the file WAL and its schema."""
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
        self._read_conn = conn

    async def stop(self) -> None:
        await self._group_commit.flush()
        for task in (self._trimming, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._trimming = self._watching = None
        for consumer in list(self._consumers):
            await consumer.close()
        await self._shut()

    async def _shut(self) -> None:
        """Close both connections, each on its own thread, and end the threads."""
        if self._reader is not None:
            await self.in_reader(self._close_reader)
            self._reader.shutdown(wait=False)
            self._reader = None
        if self._executor is not None:
            await self.in_thread(self._close)
            self._executor.shutdown(wait=False)
            self._executor = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    async def _trim_periodically(self) -> None:
        while True:
            await asyncio.sleep(_TRIM_EVERY_S)
            try:
                await self.trim()
            except sqlite3.Error as exc:
                log.warning("trimming the bus log failed: %s", exc)

    async def trim(self) -> int:
        """Delete the records every group reading their topic has committed; returns how many.

        A group reads a topic when it has committed on it or has a live member on it; its
        position on a partition where it never committed is the start. Each partition keeps its last
        record, which carries the partition's next offset (`_append`). A topic of
        `unread_topics` (those no service consumes, such as the DLQs) that no group reads keeps
        its newest `unread_keep` records per partition, for an operator to look at; any other
        topic nobody reads yet keeps everything, for the readers still to come.
        """
        return await self.in_thread(self.transaction, self._trim)

    def _trim(self, conn: sqlite3.Connection) -> int:
        readers: dict[int, set[str]] = {}
        for grp, topic_id in conn.execute("SELECT grp, topic_id FROM committed"):
            readers.setdefault(topic_id, set()).add(grp)
        # A member whose process died stays in `members` until its group next syncs; a group
        # that never comes back must not pin the log, so only live members count.
        now = time.time()
        for grp, topic_id, member, heartbeat in conn.execute(
            "SELECT grp, topic_id, member, heartbeat FROM members"
        ).fetchall():
            if not self.expired(member, heartbeat, now):
                readers.setdefault(topic_id, set()).add(grp)
        committed = {
            (grp, topic_id, part): next_seq
            for grp, topic_id, part, next_seq in conn.execute(
                "SELECT grp, topic_id, part, next_seq FROM committed"
            )
        }
        deleted = 0
        topics = conn.execute("SELECT id, name, partitions FROM topics").fetchall()
        for topic_id, name, partitions in topics:
            groups = readers.get(topic_id, set())
            if not groups and name not in self.unread_topics:
                continue  # its readers have not come yet (a service not started): keep it all
            for part in range(partitions):
                first, last = conn.execute(
                    "SELECT min(seq), max(seq) FROM messages WHERE topic_id = ? AND part = ?",
                    (topic_id, part),
                ).fetchone()
                if last is None:
                    continue
                if groups:
                    read = min(committed.get((g, topic_id, part), 0) for g in groups)
                else:  # nobody reads it, by design: the newest `unread_keep` stay
                    read = last + 1 - self.unread_keep
                if read <= first:
                    continue
                deleted += conn.execute(
                    "DELETE FROM messages WHERE topic_id = ? AND part = ? AND seq < ?",
                    (topic_id, part, min(read, last, first + _TRIM_AT_MOST)),
                ).rowcount
        return deleted

    def expired(self, member: str, heartbeat: float, now: float) -> bool:
        """A busy member is gone when its heartbeat is older than the session timeout, an idle
        one when its process is."""
        if heartbeat == IDLE:
            return not _alive(member)
        return heartbeat < now - self.session_timeout_s

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            await self.in_thread(self.topic_info, topic)

    def topic_info(self, topic: str) -> tuple[int, int]:
        """(topic id, partition count), creating the topic on first use like Kafka's auto-create.

        Creation commits on its own so a failed publish never leaves a cached id behind.
        """
        info = self._topics.get(topic)
        if info is None:

            def create(conn: sqlite3.Connection) -> tuple[int, int]:
                conn.execute(
                    "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                    (topic, self.partitions),
                )
                topic_id, partitions = conn.execute(
                    "SELECT id, partitions FROM topics WHERE name = ?", (topic,)
                ).fetchone()
                return topic_id, partitions

            info = self._topics[topic] = self.transaction(create)
        return info

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        await self._group_commit.publish(topic, records)

    async def _write(self, batch: dict[str, list[tuple[bytes, bytes]]]) -> None:
        """One group-commit round: every topic's records in one transaction."""
        await self.in_thread(self._append, batch)
        self.changed()

    def _append(self, batch: dict[str, list[tuple[bytes, bytes]]]) -> None:
        # Topics are created (each in its own transaction) before the append's transaction.
        appends = []
        for topic, records in batch.items():
            topic_id, partitions = self.topic_info(topic)
            keys: list[list[bytes]] = [[] for _ in range(partitions)]
            values: list[list[bytes]] = [[] for _ in range(partitions)]
            for key, value in records:
                # crc32: stable across processes and Python runs, unlike hash(); fast in C.
                p = zlib.crc32(key) % partitions
                keys[p].append(key)
                values[p].append(value)
            appends.append((topic_id, keys, values))

        def append(conn: sqlite3.Connection) -> None:
            for topic_id, keys, values in appends:
                for p, (part_keys, part_values) in enumerate(zip(keys, values, strict=True)):
                    if not part_keys:
                        continue
                    (last,) = conn.execute(
                        "SELECT max(seq) FROM messages WHERE topic_id = ? AND part = ?",
                        (topic_id, p),
                    ).fetchone()
                    conn.executemany(
                        "INSERT INTO messages (topic_id, part, seq, key, value)"
                        " VALUES (?, ?, ?, ?, ?)",
                        zip(
                            repeat(topic_id),
                            repeat(p),
                            count(0 if last is None else last + 1),
                            part_keys,
                            part_values,
                            strict=False,
                        ),
                    )

        self.transaction(append)

    async def subscribe(self, topic: str, group: str) -> Consumer:
        topic_id, partitions = await self.in_thread(self.topic_info, topic)
        consumer = EmbeddedConsumer(self, topic, topic_id, partitions, group)
        await self.in_thread(consumer.sync_membership)
        consumer.start_heartbeat()
        self._consumers.add(consumer)
        return consumer


class EmbeddedConsumer(Consumer):
    """One member of a group on one topic. Its state is written on the bus's threads, one call
    at a time (`poll` and `commit` await each call before the next; the heartbeat only reads it),
    and the event loop reads a few of its marks to skip a trip there when nothing has changed."""

    def __init__(
        self, bus: EmbeddedBus, topic: str, topic_id: int, partitions: int, group: str
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.topic_id = topic_id
        self.partitions = partitions
        self.group = group
        self.member = _member_id()
        # An id without a process start cannot be judged by its process: it always heartbeats.
        self._may_idle = _alive(self.member)
        self._positions: dict[int, int] = {}
        self._committed: dict[int, int] = {}  # the group's commits we know, owned partitions
        self._beat_written = 0.0  # the last heartbeat written (IDLE: marked idle)
        self._last_sync = float("-inf")
        self._synced_at = -1  # bus.changes at the last sync
        self._empty_at = -1  # bus.changes when a fetch last found nothing
        self._rotation = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False

    def start_heartbeat(self) -> None:
        """Stay alive while a batch is being processed, like Kafka's background heartbeat."""
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat-{self.member}")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.bus.session_timeout_s / 4)
            if self._beat_written == IDLE:
                continue  # marked idle: `_touch` would write nothing (a fetch ends idling)
            try:
                await self.bus.in_thread(self._touch)
            except sqlite3.Error as exc:
                log.warning("group %s on %s: heartbeat failed: %s", self.group, self.topic, exc)

    def _busy(self) -> bool:
        """Whether this member holds records it has not committed."""
        return any(pos > self._committed.get(p, 0) for p, pos in self._positions.items())

    def _touch(self) -> None:
        """Heartbeat, unless idle: an idle member is judged by its process, and writes nothing."""
        if self._may_idle and not self._busy():
            return
        self._beat_written = time.time()
        self.bus.conn.execute(
            _SET_HEARTBEAT, (self._beat_written, self.group, self.topic_id, self.member)
        )

    def sync_membership(self) -> None:
        """Heartbeat, drop dead members, release what is no longer ours, claim what is free."""
        key = (self.group, self.topic_id)

        def sync(conn: sqlite3.Connection) -> tuple[bool, set[int], dict[int, int]]:
            # Writes only what changed: an idle group that nobody joins or leaves stays unwritten.
            now = time.time()
            beats = dict(
                conn.execute(
                    "SELECT member, heartbeat FROM members WHERE grp = ? AND topic_id = ?", key
                )
            )
            for member, heartbeat in list(beats.items()):
                if self.bus.expired(member, heartbeat, now):
                    log.info("member %s of group %s on %s expired", member, self.group, self.topic)
                    conn.execute(
                        "DELETE FROM members WHERE grp = ? AND topic_id = ? AND member = ?",
                        (*key, member),
                    )
                    conn.execute(
                        "DELETE FROM owners WHERE grp = ? AND topic_id = ? AND member = ?",
                        (*key, member),
                    )
                    del beats[member]
            rejoined = self.member not in beats
            beat = IDLE if self._may_idle and not self._busy() else now
            if rejoined:
                conn.execute(
                    "INSERT INTO members (grp, topic_id, member, heartbeat) VALUES (?, ?, ?, ?)",
                    (*key, self.member, beat),
                )
            elif beat == IDLE and beats[self.member] != IDLE:
                conn.execute(_SET_HEARTBEAT, (beat, *key, self.member))
            else:
                beat = beats[self.member]  # a busy member's heartbeat is _beat's to refresh
            self._beat_written = beat
            live = sorted(
                m
                for (m,) in conn.execute(
                    "SELECT member FROM members WHERE grp = ? AND topic_id = ?", key
                )
            )
            mine = live.index(self.member)
            target = {p for p in range(self.partitions) if p % len(live) == mine}
            owners = dict(
                conn.execute("SELECT part, member FROM owners WHERE grp = ? AND topic_id = ?", key)
            )
            for p, member in owners.items():
                if member == self.member and p not in target:
                    conn.execute(
                        "DELETE FROM owners WHERE grp = ? AND topic_id = ? AND part = ?", (*key, p)
                    )
            for p in target - owners.keys():
                conn.execute(
                    "INSERT INTO owners (grp, topic_id, part, member) VALUES (?, ?, ?, ?)",
                    (*key, p, self.member),
                )
            owned = {p for p in target if owners.get(p, self.member) == self.member}
            committed = dict(
                conn.execute(
                    "SELECT part, next_seq FROM committed WHERE grp = ? AND topic_id = ?", key
                )
            )
            return rejoined, owned, committed

        changes = self.bus.changes
        rejoined, owned, committed = self.bus.transaction(sync)
        if rejoined:
            # Expired or new: whatever we read before may have been re-read and committed by others.
            self._positions.clear()
        self._positions = {p: self._positions.get(p, committed.get(p, 0)) for p in owned}
        self._committed = {p: committed.get(p, 0) for p in owned}
        self._last_sync = time.monotonic()
        self._synced_at = changes

    def _sync_due(self) -> bool:
        """After a change (a publish here, a commit elsewhere), at most every rebalance check;
        without one, only to find members that died (they commit nothing when they do)."""
        since = time.monotonic() - self._last_sync
        if self.bus.changes != self._synced_at:
            return since >= self.bus.rebalance_check_s
        return since >= self.bus.session_timeout_s / 2

    def _fetch(self, max_records: int, changes: int) -> list[Message]:
        """On the reader: up to `max_records` from the owned partitions, starting at a rotating
        partition so a busy partition cannot starve the others. `changes`: the bus's count when
        the poll began (nothing is read again until it moves, once a fetch found nothing)."""
        owned = sorted(self._positions)
        if not owned:
            self._empty_at = changes
            return []
        start = self._rotation % len(owned)
        self._rotation += 1
        out: list[Message] = []
        for p in owned[start:] + owned[:start]:
            budget = max_records - len(out)
            if budget <= 0:
                break
            rows = self.bus.read_conn.execute(
                "SELECT seq, key, value FROM messages"
                " WHERE topic_id = ? AND part = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (self.topic_id, p, self._positions[p], budget),
            ).fetchall()
            if rows:
                out.extend(Message(self.topic, p, seq, key, value) for seq, key, value in rows)
                self._positions[p] = rows[-1][0] + 1
        if not out:
            self._empty_at = changes
        return out

    async def poll(self, max_records: int = 1000, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("poll on a closed consumer")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            # Taken before fetching, so a publish in between wakes the wait below.
            new_records = self.bus.new_records
            changes = self.bus.changes
            batch: list[Message] = []
            if self._sync_due():
                await self.bus.in_thread(self.sync_membership)
                batch = await self.bus.in_reader(self._fetch, max_records, changes)
            elif changes != self._empty_at:  # else nothing came since a fetch found nothing
                batch = await self.bus.in_reader(self._fetch, max_records, changes)
            if batch and self._beat_written == IDLE:
                # Busy again: heartbeat, so a hung process loses its partitions.
                await self.bus.in_thread(self._touch)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            # Woken by a publish here or, through the bus's watcher, a commit elsewhere.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await new_records.wait()

    async def lag(self) -> dict[int, int]:
        def lag() -> dict[int, int]:
            ends = dict(
                self.bus.read_conn.execute(
                    "SELECT part, MAX(seq) + 1 FROM messages WHERE topic_id = ? GROUP BY part",
                    (self.topic_id,),
                )
            )
            return {p: max(0, ends.get(p, 0) - pos) for p, pos in self._positions.items()}

        return await self.bus.in_reader(lag)

    async def commit(self, messages: Sequence[Message]) -> None:
        offsets: dict[int, int] = {}
        for m in messages:
            offsets[m.partition] = max(offsets.get(m.partition, 0), m.offset + 1)
        if offsets:
            await self.bus.in_thread(self._commit, offsets)

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit only partitions this member still owns: after a takeover the new owner has
        already started from the older commit, so these records are delivered again anyway."""
        key = (self.group, self.topic_id)

        def goes_idle(done: dict[int, int]) -> bool:
            """Whether, with `done` committed, this member holds nothing uncommitted and is not
            marked idle yet."""
            busy = any(pos > done.get(p, 0) for p, pos in self._positions.items())
            return self._may_idle and not busy and self._beat_written != IDLE

        def commit(conn: sqlite3.Connection) -> list[int]:
            owners = dict(
                conn.execute("SELECT part, member FROM owners WHERE grp = ? AND topic_id = ?", key)
            )
            lost = [p for p in offsets if owners.get(p) != self.member]
            conn.executemany(
                "INSERT INTO committed (grp, topic_id, part, next_seq) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET next_seq = excluded.next_seq",
                [(*key, p, n) for p, n in offsets.items() if p not in lost],
            )
            done = {**self._committed, **{p: n for p, n in offsets.items() if p not in lost}}
            if goes_idle(done):
                # All read is committed: idle from here, judged by the process, in this
                # same transaction (so idling costs no write of its own).
                conn.execute(_SET_HEARTBEAT, (IDLE, *key, self.member))
            return lost

        lost = self.bus.transaction(commit)
        done = {p: n for p, n in offsets.items() if p not in lost}
        if goes_idle({**self._committed, **done}):
            self._beat_written = IDLE
        self._committed.update(done)
        if lost:
            log.warning(
                "group %s on %s: commit skipped for partitions %s now owned by another member;"
                " they will be delivered again",
                self.group,
                self.topic,
                lost,
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bus._consumers.discard(self)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.bus.in_thread(self._leave)

    def _leave(self) -> None:
        key = (self.group, self.topic_id, self.member)

        def leave(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM members WHERE grp = ? AND topic_id = ? AND member = ?", key)
            conn.execute("DELETE FROM owners WHERE grp = ? AND topic_id = ? AND member = ?", key)

        self.bus.transaction(leave)
        self._positions.clear()
