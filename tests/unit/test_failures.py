"""The one classification of store errors: the drivers' own exception classes, as each raises
them, sorted into "wait it out" and "this message is bad"."""

from __future__ import annotations

import sqlite3

import asyncpg
import pymysql
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from energy_tracker.core.failures import TransientError, is_transient


def wrapped(orig: BaseException, kind: type = OperationalError) -> BaseException:
    """What SQLAlchemy raises around a driver's error."""
    return kind("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("down"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pymysql.err.OperationalError(2013, "Lost connection to server during query"),
        pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"),
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
        sqlite3.OperationalError("database is locked"),
        wrapped(sqlite3.OperationalError("database is locked")),
        wrapped(pymysql.err.OperationalError(2006, "MySQL server has gone away")),
    ],
    ids=lambda e: f"{type(e).__name__}:{str(e)[:30]}",
)
def test_a_dependency_away_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        KeyError("device_id"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.NumericValueOutOfRangeError("numeric field overflow"),
        asyncpg.UntranslatableCharacterError("NUL"),
        pymysql.err.IntegrityError(1062, "Duplicate entry"),
        pymysql.err.DataError(1406, "Data too long for column"),
        pymysql.err.OperationalError(1366, "Incorrect string value"),
        sqlite3.OperationalError("no such table: buckets"),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), IntegrityError),
    ],
    ids=lambda e: f"{type(e).__name__}:{str(e)[:30]}",
)
def test_bad_work_is_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)
