"""Real backends for the tests: reach them, or skip (laptop) / fail (CI=true) saying which leg.

Each fixture hands out a fresh, empty database so tests never see each other's rows.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from energy_tracker.core.stores.metadata import Database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MARIADB = ("127.0.0.1", 3306)
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
MOSQUITTO = ("127.0.0.1", 1883)

SKIPPED_LEGS: set[str] = set()


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(leg: str, host: str, port: int) -> None:
    """Skip the test when the leg's server is absent, unless this is CI, where that is a failure."""
    if reachable(host, port):
        return
    if IN_CI:
        pytest.fail(f"{leg} leg: no server on {host}:{port}, and CI=true requires it")
    SKIPPED_LEGS.add(f"{leg} (no server on {host}:{port})")
    pytest.skip(f"{leg} leg skipped: no server on {host}:{port}")


def pg_admin(sql: str, port: int = POSTGRES[1]) -> None:
    """Run `sql` as postgres on the server at `port` (the shared one by default)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(
            host=POSTGRES[0], port=port, user="postgres", database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def mysql_admin(sql: str, port: int = MARIADB[1]) -> None:
    """Run `sql` as root on the server at `port` (the shared one by default)."""
    import pymysql

    conn = pymysql.connect(host=MARIADB[0], port=port, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.commit()
    finally:
        conn.close()


def fresh_database_name() -> str:
    return f"et_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (postgresql://…), dropped afterwards."""
    require("postgresql", *POSTGRES)
    name = fresh_database_name()
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The local Redis server (redis://…); tests keep their keys apart with `redis_prefix`."""
    require("redis", *REDIS)
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"et_test_{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL database (mysql://…), dropped afterwards."""
    require("mariadb", *MARIADB)
    name = fresh_database_name()
    mysql_admin(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql://root@{MARIADB[0]}:{MARIADB[1]}/{name}"
    finally:
        mysql_admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mysql),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def metadata_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend ET_DB_URL can name, as an ET_DB_URL: SQLite (in a
    directory that does not exist yet: start() must create it), MariaDB and PostgreSQL. A sync
    fixture: the server ones make it blocking."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/meta.db"
    url: str = request.getfixturevalue(
        "mysql_url" if request.param == "mariadb" else "postgres_url"
    )
    return url


@pytest.fixture
async def metadata_db(metadata_db_url: str) -> AsyncIterator[Database]:
    """The metadata database of `metadata_db_url`, started and migrated; stopped afterwards."""
    from energy_tracker.core.stores.metadata import Database

    database = Database(metadata_db_url)
    await database.start()
    try:
        await database.migrate()
        yield database
    finally:
        await database.stop()
