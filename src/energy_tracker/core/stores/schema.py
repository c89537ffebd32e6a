"""The metadata schema (users, devices, refresh tokens) as SQLAlchemy Core tables.

The tables are the query vocabulary of the stores; the DDL itself lives in the Alembic revisions
under `migrations/versions`, which must be kept in step with this module by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    MetaData,
    String,
    Table,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

# Deterministic constraint names, so a later revision can drop or alter them on every dialect.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect.

    PostgreSQL keeps the offset itself; SQLite and MySQL store naive values, so they are written
    as naive UTC and read back with UTC attached. MySQL gets microseconds (DATETIME(6)) so that
    creation order survives. Naive input is refused: it would silently mean the server's zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[datetime]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# none_as_null: a missing tariff or device metadata is SQL NULL, not the JSON literal `null`.
JsonOrNull = JSON(none_as_null=True)

# On MySQL/MariaDB every table is InnoDB (foreign keys, row locks) and utf8mb4 (any name text).
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("name", String(200), nullable=True),
    Column("role", String(16), nullable=False, server_default=text("'user'")),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("timezone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("currency", String(3), nullable=False, server_default=text("'EUR'")),
    Column("tariff", JsonOrNull, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "owner_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("timezone", String(64), nullable=True),
    Column("location", String(200), nullable=True),
    # `metadata` is the column; `meta` the Python key, as `metadata` means the MetaData elsewhere.
    Column("metadata", JsonOrNull, key="meta", nullable=True),
    Column("api_key_hash", String(64), nullable=False, unique=True),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "user_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
