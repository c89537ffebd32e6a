"""The metadata schema (users, households, devices, refresh and access tokens, alerts) as
SQLAlchemy Core tables.

The tables are the query vocabulary of the stores; the DDL itself lives in the Alembic revisions
under `migrations/versions`, which must be kept in step with this module by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    exists,
    false,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.selectable import Exists
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
    Column("created_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# A home: what its devices' readings are dated and priced by (the settings that were a user's
# before revision 0003), shared by its members.
households = Table(
    "households",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("currency", String(3), nullable=False, server_default=text("'EUR'")),
    Column("tariff", JsonOrNull, nullable=True),
    # ISO 3166-1 alpha-2, for the local public holidays insights may take into account.
    Column("country", String(2), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

household_members = Table(
    "household_members",
    metadata,
    Column(
        "household_id",
        String(36),
        ForeignKey("households.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "user_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("role", String(16), nullable=False),  # owner | member | viewer (core.authz.ROLES)
    Column("notify_email", Boolean, nullable=False, server_default=false()),
    Column("joined_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# An invitation of an e-mail without an account yet: registering with it joins the household.
household_invitations = Table(
    "household_invitations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "household_id",
        String(36),
        ForeignKey("households.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("email", String(254), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column(
        "invited_by",
        String(36),
        ForeignKey("users.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime, nullable=True),
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
    # The household the device belongs to; owner_id is the account that registered it.
    Column(
        "household_id",
        String(36),
        ForeignKey("households.id", ondelete="CASCADE"),
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
    # What the device measures in its home (core.consumption.Role); existing rows: consumer.
    Column("role", String(16), nullable=False, server_default="consumer"),
    # The device a sub-meter sits inside; kept valid by the devices store (no foreign key:
    # see migration 0004_device_roles).
    Column("parent_id", String(36), nullable=True),
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


# Personal access tokens (scripts, Home Assistant): the SHA-256 of the token, never the token.
# A revoked one stays, so that using it is answered "revoked" rather than "unknown".
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "user_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scope", String(8), nullable=False),  # "read" or "write"
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),  # NULL: never
    Column("last_used_at", UtcDateTime, nullable=True),  # to the minute (see credentials.py)
    Column("revoked_at", UtcDateTime, nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# One row (id 1): a counter every change of what authentication answers moves (an account, a
# household's members, a device, a token), so that each process's credential cache
# (core/credentials.py) learns of changes made in other processes by reading one row a second.
credential_changes = Table(
    "credential_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)


# -- alerts ------------------------------------------------------------------------------------
# Instants the evaluation reasons about (reading time, pending since, cooldown end) are epoch ms,
# as on the bus; instants shown to people (started, resolved, delivered) are UtcDateTime.

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "owner_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column(
        "household_id",
        String(36),
        ForeignKey("households.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # NULL: all of the household's devices (summed for power, energy and cost; each for silence).
    Column(
        "device_id",
        String(36),
        ForeignKey("devices.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    Column("name", String(200), nullable=False),
    Column("metric", String(16), nullable=False),
    Column("period", String(8), nullable=False),
    Column("op", String(2), nullable=False),
    Column("threshold", Double, nullable=False),
    Column("clear_threshold", Double, nullable=True),
    Column("for_s", Integer, nullable=False, server_default=text("0")),
    Column("cooldown_s", Integer, nullable=False, server_default=text("0")),
    Column("severity", String(16), nullable=False),
    # [{"type": "webhook", "url", "secret"} | {"type": "email", "to"}]
    Column("channels", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The evaluation state of one rule over one scope (a device id, or "*" for the owner's sum);
# `version` makes every write conditional, so two replicas never both act on one state.
alert_states = Table(
    "alert_states",
    metadata,
    Column(
        "rule_id",
        String(36),
        ForeignKey("alert_rules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("scope", String(36), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_at", BigInteger, nullable=True),
    Column("pending_since", BigInteger, nullable=True),
    Column("firing_since", BigInteger, nullable=True),
    Column("peak", Double, nullable=True),
    Column("cooldown_until", BigInteger, nullable=True),
    Column("period_end", BigInteger, nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "rule_id",
        String(36),
        ForeignKey("alert_rules.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column(
        "owner_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column(
        "household_id",
        String(36),
        ForeignKey("households.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("device_id", String(36), nullable=True),
    Column("state", String(16), nullable=False),
    Column("acknowledged", Boolean, nullable=False, server_default=false()),
    Column("acknowledged_at", UtcDateTime, nullable=True),
    Column("severity", String(16), nullable=False),
    Column("value", Double, nullable=False),
    Column("peak_value", Double, nullable=False),
    Column("threshold", Double, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("last_seen_at", UtcDateTime, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# One row per alert transition, written with it: the outbox of `alert-events` (published right
# after the commit, swept up again if the process died first) and the source of the SSE stream.
alert_transitions = Table(
    "alert_transitions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "alert_id",
        String(36),
        ForeignKey("alerts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("owner_id", String(36), nullable=False),
    Column("household_id", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("published", Boolean, nullable=False, server_default=false()),
    Index("ix_alert_transitions_household_recorded", "household_id", "recorded_at"),
    Index("ix_alert_transitions_unpublished", "published", "recorded_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The notification outbox: one row per transition and channel, sent by the dispatcher.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "alert_id",
        String(36),
        ForeignKey("alerts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("channel", String(16), nullable=False),
    Column("target", String(2048), nullable=False),
    Column("secret", String(256), nullable=True),
    Column("event", String(16), nullable=False),
    # The exact bytes sent (and signed), fixed when the transition happened.
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

alert_delivery_attempts = Table(
    "alert_delivery_attempts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "delivery_id",
        String(36),
        ForeignKey("alert_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("attempt", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# What the alerts consumer last heard from a device: for silence and for summed power.
alert_device_seen = Table(
    "alert_device_seen",
    metadata,
    Column(
        "device_id",
        String(36),
        ForeignKey("devices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("last_ts", BigInteger, nullable=False),
    Column("power_w", Double, nullable=True),
    Column("power_ts", BigInteger, nullable=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The newest version of each usage bucket the alert rules watch: a redelivered or older version
# changes nothing, and an owner's devices are summed from here.
alert_usage = Table(
    "alert_usage",
    metadata,
    Column(
        "device_id",
        String(36),
        ForeignKey("devices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("granularity", String(8), primary_key=True),
    Column("period_start", BigInteger, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("energy_kwh", Double, nullable=False),
    Column("cost", Double, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)


def device_has_active_owner() -> Exists:
    """Whether a device's household still has an owner whose account is enabled (a condition
    on `devices` rows). A device belongs to its household, not to the member who registered
    it: disabling that member leaves it working, while a household whose every owner is
    disabled stops (nobody may answer for its devices any more). Every query that decides
    whether a device is enabled uses this one condition."""
    m = household_members.c
    return exists(
        select(m.user_id)
        .join(users, users.c.id == m.user_id)
        .where(
            m.household_id == devices.c.household_id,
            m.role == "owner",
            users.c.disabled == false(),
        )
    )
