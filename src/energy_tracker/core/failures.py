"""Which failures are worth waiting out: one place that classifies every store's errors.

A transient failure is the dependency's, not the message's (a server restarting, a connection
cut, a lock held, a deadlock, too many clients): the consume loop keeps the batch uncommitted
and retries it with a growing pause, so an outage never empties a topic into its DLQ. Anything
else (a constraint broken, a value a column cannot hold, a bug) is permanent: retrying would
block the partition forever, so that one message goes to the DLQ.

Each backend says which it is in its own terms: PostgreSQL by SQLSTATE class, MariaDB/MySQL by
error number, SQLite by its message, and the network by `OSError`. SQLAlchemy wraps the driver's
error (`.orig`), and flags a connection it had to drop (`connection_invalidated`).
"""

from __future__ import annotations

import asyncio
import sqlite3

# PostgreSQL SQLSTATE classes: 08 connection exception, 40 transaction rollback (serialization,
# deadlock), 53 insufficient resources (too many connections, disk full), 57 operator
# intervention (admin shutdown, "the database system is starting up"), 58 system error (I/O).
_PG_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# MariaDB/MySQL error numbers: 1040 too many connections, 1053 server shutdown, 1205 lock wait
# timeout, 1213 deadlock, 1927 connection killed, 2002/2003 cannot connect, 2006 server gone
# away, 2013 lost connection during a query, 2055 lost connection (system error), 4031 the
# client was disconnected by the server for inactivity.
_MYSQL_TRANSIENT = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})
# SQLite: another writer holds the file (busy, locked), or the file is (for now) unreachable.
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "busy",
    "disk i/o error",
    "unable to open database file",
)


class TransientError(Exception):
    """Raised by a handler when a dependency is down and the batch should be retried as is."""


def is_transient(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says a dependency is away, not that the work is bad."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_here(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | OSError | TimeoutError | asyncio.TimeoutError):
        return True
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy dropped the connection
        return True
    name = type(exc).__name__
    if name in ("InterfaceError", "ConnectionDoesNotExistError", "DisconnectionError"):
        # asyncpg/SQLAlchemy/DB-API: the connection is closed or unusable, whatever the query.
        return True
    if name == "TimeoutError" and type(exc).__module__.startswith("sqlalchemy"):
        return True  # the connection pool is exhausted: the server is slow or away
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        return state[:2] in _PG_TRANSIENT_CLASSES
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code is not None and type(exc).__module__.startswith(("pymysql", "aiomysql", "MySQLdb")):
        return code in _MYSQL_TRANSIENT
    if isinstance(exc, sqlite3.OperationalError) or (
        name == "OperationalError" and type(exc).__module__.startswith(("sqlite3", "aiosqlite"))
    ):
        message = str(exc).lower()
        return any(text in message for text in _SQLITE_TRANSIENT)
    return False
