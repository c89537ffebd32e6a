"""The embedded time-series store: one SQLite file in WAL mode.

Device ids (UUID strings) are mapped to small integers in a `series` table, so the readings table
is keyed by (series INTEGER, ts INTEGER) WITHOUT ROWID: rows are stored in key order, and a
device's readings over a time range are one contiguous B-tree scan. The map never changes once a
device has an id, so every process sharing the file can cache it forever.

sqlite3 calls block, so they run on dedicated threads, each owning its connection: the event
loop never waits on the disk, and a connection is never shared between threads. Writes and the
consumer's reads run on the writer's thread; the usage API's reads (buckets, pages of readings)
run on a reader thread with its own connection, so a query never queues behind a batch being
written (WAL lets one writer and readers work at once, and a read sees every committed write).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import starmap
from operator import attrgetter
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl
from energy_tracker.core.events import Reading
from energy_tracker.core.stores.timeseries.base import (
    Bucket,
    BucketQuery,
    Granularity,
    SeriesStore,
    Span,
    group_readings,
    merge_bucket_queries,
    merge_windows,
)

T = TypeVar("T")

VARIABLE = "ET_TSDB_URL"

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL, as the embedded bus: a committed batch is in the WAL before add_readings returns,
    # so a killed process loses nothing; only a power cut can undo the last commits. FULL
    # (an fsync per commit) cost about a quarter of the rate of 10k-device batches, which
    # dirty ~45 MB each.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA cache_size=-65536",
    "PRAGMA temp_store=MEMORY",
    # A batch from many devices dirties one leaf page per device (10k devices: ~45 MB of WAL a
    # commit), and successive batches dirty the same pages again. A checkpoint writes each page
    # once, however many commits changed it, so checkpointing every ~400 MB instead of every
    # commit (the default is 1000 pages) cut the steady-state commit cost from 250 to 85 ms.
    # A household's small commits never come near it; the WAL is cut back to 64 MB afterwards.
    "PRAGMA wal_autocheckpoint=100000",
    "PRAGMA journal_size_limit=67108864",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS readings (
        series INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        power_w REAL,
        energy_wh REAL,
        voltage_v REAL,
        current_a REAL,
        PRIMARY KEY (series, ts)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS buckets (
        series INTEGER NOT NULL,
        granularity TEXT NOT NULL,
        start INTEGER NOT NULL,
        energy_wh REAL NOT NULL,
        cost REAL NOT NULL,
        samples INTEGER NOT NULL,
        power_samples INTEGER NOT NULL,
        power_sum_w REAL NOT NULL,
        min_power_w REAL,
        max_power_w REAL,
        version INTEGER NOT NULL,
        PRIMARY KEY (series, granularity, start)
    ) WITHOUT ROWID""",
)

_INSERT_READING = "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)"
# A batch as one JSON array of rows, unpacked by SQLite itself: one statement, so the store's
# thread releases the GIL once for the whole batch. executemany releases and retakes it for
# every row, and each retake waits for the busy event loop thread to let go of it: beside a
# busy thread, inserts crawled at ~1.6 ms a row (9 us with json_each). orjson writes the
# shortest repr of a float and SQLite reads it back to the same double.
_INSERT_READINGS = """INSERT OR IGNORE INTO readings
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?)"""
_PUT_BUCKETS = f"""INSERT OR REPLACE INTO buckets
    SELECT {", ".join(f"value->>{i}" for i in range(11))} FROM json_each(?)"""
_READING_COLUMNS = "ts, power_w, energy_wh, voltage_v, current_a"
_BUCKET_COLUMNS = (
    "start, energy_wh, cost, samples, power_samples, power_sum_w, min_power_w, max_power_w, version"
)
# Three walks of the (series, ts) key: back one step from start, across [start, end), and one
# step forward from end.
_AROUND = f"""
    SELECT * FROM (SELECT {_READING_COLUMNS} FROM readings
                   WHERE series = :s AND ts < :start ORDER BY ts DESC LIMIT 1)
    UNION ALL
    SELECT {_READING_COLUMNS} FROM readings WHERE series = :s AND ts >= :start AND ts < :end
    UNION ALL
    SELECT * FROM (SELECT {_READING_COLUMNS} FROM readings
                   WHERE series = :s AND ts >= :end ORDER BY ts LIMIT 1)
    ORDER BY ts"""
_COUNT = "SELECT count(*) FROM readings WHERE series = ? AND ts >= ? AND ts < ?"
_BUCKETS = f"""SELECT {_BUCKET_COLUMNS} FROM buckets
    WHERE series = ? AND granularity = ? AND start >= ? AND start < ? ORDER BY start"""
# One PK range scan per device (the IN list), added up by SQLite: a household's month by day is
# one row a day back to Python, however many devices it has.
_SUMS = """sum(energy_wh), sum(cost), sum(samples), sum(power_samples), sum(power_sum_w),
        min(min_power_w), max(max_power_w), 0"""
_SUMMED = f"""SELECT start, {_SUMS}
    FROM buckets
    WHERE series IN (SELECT value FROM json_each(?)) AND granularity = ? AND start >= ?
        AND start < ?
    GROUP BY start ORDER BY start"""
# The same PK range scans, added up per device instead of per period (the key's order).
_TOTALS = f"""SELECT series, {_SUMS}
    FROM buckets
    WHERE series IN (SELECT value FROM json_each(?)) AND granularity = ? AND start >= ?
        AND start < ?
    GROUP BY series"""
_PAGE = f"""SELECT {_READING_COLUMNS} FROM readings
    WHERE series = :s AND ts >= :low AND ts < :end ORDER BY ts LIMIT :limit"""

READ_STATEMENTS: dict[str, str] = {
    "buckets": _BUCKETS,
    "summed_buckets": _SUMMED,
    "device_totals": _TOTALS,
    "readings_page": _PAGE,
    "readings_around": _AROUND,
    "count_readings": _COUNT,
}
"""Every read statement by name: the plan test (tests/contract) checks that none of them scans
a whole table."""

Row = tuple[int, int, float | None, float | None, float | None, float | None]
_BY_DEVICE = attrgetter("device_id")


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:` URL, read as SQLAlchemy reads it (and so as ET_DB_URL is read):
    `sqlite:///relative/path.db` (to the working directory), `sqlite:////absolute/path.db`."""
    parts = urlsplit(url)
    path = unquote(parts.path)[1:]
    if parts.scheme != "sqlite" or parts.netloc or not path.strip("/"):
        raise UnsupportedUrl(VARIABLE, url, "sqlite:////absolute/path/series.db")
    return Path(path).absolute()


class SqliteSeriesStore(SeriesStore):
    """Readings and buckets in one SQLite file; see the module docstring for the layout."""

    def __init__(self, path: str | Path, url: str | None = None) -> None:
        self._path = Path(path)
        self._url = url or f"sqlite:///{self._path}"
        self._executor: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._series: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str) -> SqliteSeriesStore:
        return cls(sqlite_path(url), url)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-sqlite")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-sqlite-read")
        try:
            await self._run(self._open)  # first: it creates the file and sets WAL mode
            await self._read(self._open_reader)
        except (OSError, sqlite3.Error) as exc:
            await self.stop()
            raise BackendUnavailable(VARIABLE, self._url, str(exc)) from None

    async def stop(self) -> None:
        if self._reader is not None:
            await self._read(self._close_reader)
            self._reader.shutdown(wait=True)
            self._reader = None
        if self._executor is not None:
            await self._run(self._close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def ping(self) -> None:
        await self._run(lambda: self._db.execute("SELECT 1").fetchone())

    async def migrate(self) -> None:
        await self._run(self._migrate)

    # -- port --------------------------------------------------------------------------------

    async def add_readings(self, readings: Sequence[Reading]) -> list[Reading]:
        if not readings:
            return []
        return await self._run(lambda: self._add_readings(readings))

    async def readings_around_many(self, windows: Sequence[Span]) -> dict[str, list[Reading]]:
        if not windows:
            return {}
        merged = merge_windows(windows)
        return await self._run(lambda: self._readings_around_many(merged))

    async def count_readings_many(self, windows: Sequence[Span]) -> dict[str, int]:
        return await self._run(lambda: self._count_readings_many(windows)) if windows else {}

    async def readings_page(
        self, device_id: str, start: int, end: int, after_ts: int | None, limit: int
    ) -> list[Reading]:
        low = start if after_ts is None else max(start, after_ts + 1)
        # max(limit, 0): to SQLite, a negative LIMIT means no limit at all.
        params = {"low": low, "end": end, "limit": max(limit, 0)}
        return await self._read(lambda: self._page(device_id, params))

    async def buckets_many(self, queries: Sequence[BucketQuery]) -> list[Bucket]:
        merged = merge_bucket_queries(queries)
        if not merged:
            return []
        return await self._read(lambda: self._buckets_many(merged))

    async def summed_buckets(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        if not device_ids or start >= end:
            return []
        return await self._read(lambda: self._summed(device_ids, granularity, start, end))

    async def device_totals(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        if not device_ids or start >= end:
            return []
        return await self._read(lambda: self._totals(device_ids, granularity, start, end))

    async def put_buckets(self, buckets: Sequence[Bucket]) -> None:
        if buckets:
            await self._run(lambda: self._put_buckets(buckets))

    async def delete_readings_before(self, ts: int) -> int:
        return await self._run(lambda: self._delete_readings_before(ts))

    # -- on the store's thread ---------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        """`fn` on the writer's thread."""
        if self._executor is None:
            raise RuntimeError("SqliteSeriesStore used before start() or after stop()")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        """`fn` on the reader's thread."""
        if self._reader is None:
            raise RuntimeError("SqliteSeriesStore used before start() or after stop()")
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        if sqlite3.sqlite_version_info < (3, 38):  # the ->> operator of _INSERT_READINGS
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version}: 3.38 or later needed"
            )
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open_reader(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-32768")
        self._read_conn = conn

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteSeriesStore used before start() or after stop()")
        return self._conn

    @property
    def _read_db(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise RuntimeError("SqliteSeriesStore used before start() or after stop()")
        return self._read_conn

    def _migrate(self) -> None:
        with _write(self._db) as db:
            for ddl in _SCHEMA:
                db.execute(ddl)

    def _series_ids(
        self, device_ids: Iterable[str], create: bool, db: sqlite3.Connection | None = None
    ) -> Mapping[str, int]:
        """Device id -> series id, holding these devices (unknown ones get an id when `create`,
        else stay absent). It is the cache itself: copying it for every batch costs more than
        the lookups. `db` is the connection of the calling thread (default: the writer's); only
        the writer creates ids.

        New ids are committed on their own, before any readings, so the cache never holds an id
        that a rolled-back transaction took away again.
        """
        missing = list({d for d in device_ids if d not in self._series})
        if missing:
            db = db or self._db
            if create:
                with _write(db):
                    db.executemany(
                        "INSERT OR IGNORE INTO series (device_id) VALUES (?)",
                        [(d,) for d in missing],
                    )
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self._series.update(
                    db.execute(
                        f"SELECT device_id, id FROM series WHERE device_id IN ({marks})", chunk
                    )
                )
        return self._series

    def _add_readings(self, readings: Sequence[Reading]) -> list[Reading]:
        ids = self._series_ids({r.device_id for r in readings}, create=True)
        rows: list[Row] = [
            (ids[r.device_id], r.ts, r.power_w, r.energy_wh, r.voltage_v, r.current_a)
            for r in readings
        ]
        db = self._db
        with _write(db):
            # Fast path: live traffic is all new and a redelivery is all old, and the change
            # count tells those two apart in one statement. Only a batch that is partly
            # stored, or repeats a reading, pays for a second pass that learns which rows were
            # new, row by row (INSERT OR IGNORE keeps the first of a repeated key).
            db.execute("SAVEPOINT batch")
            before = db.total_changes
            db.execute(_INSERT_READINGS, (orjson.dumps(rows),))
            inserted = db.total_changes - before
            if inserted in (0, len(rows)):
                db.execute("RELEASE batch")
                return list(readings) if inserted else []
            db.execute("ROLLBACK TO batch")
            db.execute("RELEASE batch")
            fresh = []
            for reading, row in zip(readings, rows, strict=True):
                before = db.total_changes
                db.execute(_INSERT_READING, row)
                if db.total_changes != before:
                    fresh.append(reading)
            return fresh

    def _page(self, device_id: str, params: dict[str, int]) -> list[Reading]:
        db = self._read_db
        series = self._series_ids((device_id,), create=False, db=db).get(device_id)
        if series is None:
            return []
        rows = db.execute(_PAGE, {**params, "s": series})
        return list(starmap(partial(Reading, device_id), rows))

    def _readings_around_many(self, windows: list[Span]) -> dict[str, list[Reading]]:
        """One small indexed query per window, all on this thread in one hop: each is a few
        B-tree descents, far cheaper than the executor hop a call would otherwise cost."""
        ids = self._series_ids((w[0] for w in windows), create=False)
        db = self._db
        found: list[Reading] = []
        for device_id, start, end in windows:
            series = ids.get(device_id)
            if series is not None:
                rows = db.execute(_AROUND, {"s": series, "start": start, "end": end})
                found.extend(starmap(partial(Reading, device_id), rows))
        return group_readings(windows, found)

    def _count_readings_many(self, windows: Sequence[Span]) -> dict[str, int]:
        ids = self._series_ids((w[0] for w in windows), create=False)
        db = self._db
        counts = dict.fromkeys((w[0] for w in windows), 0)
        for device_id, start, end in windows:
            series = ids.get(device_id)
            if series is not None:
                (counts[device_id],) = db.execute(_COUNT, (series, start, end)).fetchone()
        return counts

    def _buckets_many(self, queries: list[BucketQuery]) -> list[Bucket]:
        """One PK range scan per query, in the queries' order, which is the result's order."""
        db = self._read_db
        ids = self._series_ids((q[0] for q in queries), create=False, db=db)
        out: list[Bucket] = []
        for device_id, granularity, start, end in queries:
            series = ids.get(device_id)
            if series is not None:
                rows = db.execute(_BUCKETS, (series, granularity.value, start, end))
                out.extend(Bucket(device_id, granularity, *row) for row in rows)
        return out

    def _summed(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        db = self._read_db
        ids = self._series_ids(device_ids, create=False, db=db)
        series = sorted({ids[d] for d in device_ids if d in ids})
        if not series:
            return []
        rows = db.execute(
            _SUMMED, (orjson.dumps(series), Granularity(granularity).value, start, end)
        )
        return [Bucket("*", granularity, *row) for row in rows]

    def _totals(
        self, device_ids: Sequence[str], granularity: Granularity, start: int, end: int
    ) -> list[Bucket]:
        db = self._read_db
        ids = self._series_ids(device_ids, create=False, db=db)
        device_of = {ids[d]: d for d in device_ids if d in ids}
        if not device_of:
            return []
        rows = db.execute(
            _TOTALS, (orjson.dumps(sorted(device_of)), Granularity(granularity).value, start, end)
        )
        found = [Bucket(device_of[series], granularity, start, *sums) for series, *sums in rows]
        return sorted(found, key=_BY_DEVICE)

    def _put_buckets(self, buckets: Sequence[Bucket]) -> None:
        ids = self._series_ids((b.device_id for b in buckets), create=True)
        rows = [
            (
                ids[b.device_id],
                Granularity(b.granularity).value,
                b.start,
                b.energy_wh,
                b.cost,
                b.samples,
                b.power_samples,
                b.power_sum_w,
                b.min_power_w,
                b.max_power_w,
                b.version,
            )
            for b in buckets
        ]
        with _write(self._db) as db:
            db.execute(_PUT_BUCKETS, (orjson.dumps(rows),))

    def _delete_readings_before(self, ts: int) -> int:
        with _write(self._db) as db:
            # Naming the series lets SQLite walk the (series, ts) key per device instead of
            # scanning the whole table.
            cur = db.execute(
                "DELETE FROM readings WHERE series IN (SELECT id FROM series) AND ts < ?", (ts,)
            )
            return cur.rowcount


@contextmanager
def _write(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so two processes
    sharing the file wait for each other (busy_timeout) instead of failing to upgrade a read lock.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
