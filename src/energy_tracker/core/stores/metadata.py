"""The metadata database (users, devices, refresh tokens) on SQLAlchemy async, for every ET_DB_URL.

One `Database` owns the async engine; the service stores (UserStore, DeviceStore, …) borrow it and
run Core statements in `db.begin()` transactions. Supported URLs and the drivers they map to:

- `sqlite:///relative/meta.db`, `sqlite:////abs/meta.db`  -> sqlite+aiosqlite (the embedded default)
- `mysql://user[:pw]@host[:port]/db` (MySQL or MariaDB)  -> mysql+aiomysql
- `postgresql://…` or `postgres://…`                     -> postgresql+asyncpg

The async spellings of the same three (`sqlite+aiosqlite://…` etc.) are accepted as they are.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl
from energy_tracker.core.stores.pools import watch_pool

VARIABLE = "ET_DB_URL"
SUPPORTED = "sqlite:///path/meta.db, mysql://user@host:3306/db or postgresql://user@host:5432/db"

# Scheme as written in ET_DB_URL -> SQLAlchemy async driver name.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Any string, hashed by the server, identifying "the energy-tracker schema migration" lock.
_MIGRATION_LOCK = "energy_tracker_migrate"


class Conflict(Exception):
    """A write collided with a unique constraint (e.g. an email already registered)."""


def async_url(url: str) -> URL:
    """Map an ET_DB_URL to the SQLAlchemy URL of its async driver; UnsupportedUrl otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UnsupportedUrl(VARIABLE, url, SUPPORTED) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise UnsupportedUrl(VARIABLE, url, SUPPORTED)
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        # Every pooled connection would get its own empty in-memory database.
        raise UnsupportedUrl(VARIABLE, url, SUPPORTED)
    return parsed.set(drivername=driver)


def alembic_config() -> Config:
    """The Alembic configuration, built in code so no alembic.ini has to ship or be found."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


class Database:
    """The metadata database: engine lifecycle, migrations and transactions."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._async_url = async_url(url)
        self._connect_timeout = connect_timeout
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The async engine; only after `start()`."""
        if self._engine is None:
            raise RuntimeError("Database.start() has not been called")
        return self._engine

    async def start(self) -> None:
        """Create the engine and prove the server answers; else BackendUnavailable, within ~5 s."""
        engine: AsyncEngine | None = None
        try:
            engine = self._create_engine()
            async with asyncio.timeout(self._connect_timeout), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # whatever the driver raises, the operator needs one clear line
            if engine is not None:
                await engine.dispose()
            raise BackendUnavailable(
                VARIABLE, self.url, _reason(exc, self._connect_timeout)
            ) from exc
        self._engine = engine
        watch_pool("metadata", self)

    def pool_use(self) -> tuple[int, int, int] | None:
        pool = self._engine.sync_engine.pool if self._engine is not None else None
        if not isinstance(pool, QueuePool):
            return None  # SQLite's single-connection pools have nothing to watch
        return pool.checkedout(), pool.checkedin(), pool.size() + max(pool._max_overflow, 0)

    async def ping(self) -> None:
        """Raise unless the server answers a trivial query (readiness)."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def stop(self) -> None:
        """Close every pooled connection; safe to call twice."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def migrate(self) -> None:
        """Upgrade the schema to the newest revision (`alembic upgrade head`); safe to repeat."""
        async with _migration_lock(), self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite alters a table by rebuilding it, and dropping the old one would
                # cascade into every table that references it: keys are enforced again, and
                # checked, before the commit (see _upgrade_head). Only outside a transaction
                # does this pragma take effect.
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            try:
                await conn.run_sync(_upgrade_head)
                await conn.commit()
            except BaseException:
                # Never hand a connection without its foreign keys back to the pool.
                await conn.invalidate()
                raise
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in a transaction: committed when the block ends, rolled back on error."""
        return self.engine.begin()

    def _create_engine(self) -> AsyncEngine:
        url = self._async_url
        options: dict[str, Any] = {"pool_pre_ping": True}
        backend = url.get_backend_name()
        if backend == "sqlite":
            # Without the directory, a fresh data dir would fail with "unable to open database".
            assert url.database is not None  # async_url refuses a missing or in-memory database
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # A local file never drops a connection, so no ping; and opening one costs a thread
            # and three PRAGMAs (profiled at several ms under load), so enough are kept open for
            # the concurrency of a busy process instead of overflow ones opened and closed.
            options.update(pool_pre_ping=False, pool_size=16, max_overflow=16)
        elif backend == "mysql":
            # The server closes idle connections (wait_timeout); recycle them well before that.
            options["pool_recycle"] = 3600
            options["connect_args"] = {"connect_timeout": self._connect_timeout}
        elif backend == "postgresql":
            options["connect_args"] = {"timeout": self._connect_timeout}
        engine = create_async_engine(url, **options)
        if backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine


# Alembic keeps `context` and `op` in module globals, so two migrations interleaved on one event
# loop (two services starting in one process, even on different databases) would run each
# other's revisions. One lock per loop, as an asyncio.Lock must not be shared between loops.
_migration_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def _migration_lock() -> asyncio.Lock:
    return _migration_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: enforce foreign keys (cascades), WAL so readers never block the writer."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _upgrade_head(connection: Connection) -> None:
    """Run inside `run_sync`: take a database-wide lock, then Alembic upgrades on this connection.

    The lock serialises processes (replicas, or `serve` per service) migrating one database at
    once, so the later one finds the schema current instead of failing on "table already exists".
    """
    backend = connection.dialect.name
    if backend == "sqlite":
        # The driver opens no transaction before DDL; take the write lock now and hold it (with
        # the DDL inside, which SQLite makes atomic) until the commit that ends `migrate()`.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif backend == "postgresql":
        # Transaction-scoped: released by the commit that ends `migrate()`.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": _MIGRATION_LOCK}
        )
    elif backend in ("mysql", "mariadb"):
        got = connection.scalar(text("SELECT GET_LOCK(:name, 60)"), {"name": _MIGRATION_LOCK})
        if got != 1:
            raise RuntimeError(f"another migration has held lock {_MIGRATION_LOCK!r} for 60 s")
    try:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        if backend == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left broken foreign keys: {broken[:5]}")
    finally:
        if backend in ("mysql", "mariadb"):
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MIGRATION_LOCK})


def _reason(exc: BaseException, timeout: float) -> str:
    """The driver's own words, one line, without SQLAlchemy's boilerplate around them."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message[:200]
