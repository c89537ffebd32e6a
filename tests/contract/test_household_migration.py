"""Revision 0003_households on a populated database, on every backend ET_DB_URL can name.

The database is brought to revision 0002 (the schema before households), filled the way that
code filled it (users with settings, devices, rules, alerts, transitions), and upgraded: each
user must own one household holding their settings, devices, rules and alerts, and nothing else
may change. Then down again, and the settings must be back on the users.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection

from energy_tracker.core.stores.metadata import Database, alembic_config

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TARIFF = {"type": "flat", "price_per_kwh": 0.3, "standing_charge_per_day": 0.5}

# The tables as revision 0002 left them (only the columns these tests write).
_users = sa.table(
    "users",
    *(sa.column(c) for c in ("id", "email", "password_hash", "name", "timezone", "currency")),
    sa.column("tariff", sa.JSON(none_as_null=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_devices = sa.table(
    "devices",
    *(sa.column(c) for c in ("id", "owner_id", "name", "type", "api_key_hash")),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_rules = sa.table(
    "alert_rules",
    *(sa.column(c) for c in ("id", "owner_id", "device_id", "name", "metric", "period", "op")),
    *(sa.column(c) for c in ("threshold", "severity")),
    sa.column("channels", sa.JSON()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_alerts = sa.table(
    "alerts",
    *(sa.column(c) for c in ("id", "rule_id", "owner_id", "device_id", "state", "severity")),
    *(sa.column(c) for c in ("value", "peak_value", "threshold")),
    sa.column("started_at", sa.DateTime(timezone=True)),
    sa.column("last_seen_at", sa.DateTime(timezone=True)),
)
_transitions = sa.table(
    "alert_transitions",
    *(sa.column(c) for c in ("id", "alert_id", "owner_id", "state")),
    sa.column("payload", sa.JSON()),
    sa.column("recorded_at", sa.DateTime(timezone=True)),
)


def _to(revision: str, *, down: bool = False) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


def _naive(at: datetime, connection: Connection) -> datetime:
    # The 0002 columns are TIMESTAMPTZ on PostgreSQL, naive UTC elsewhere (as UtcDateTime wrote).
    return at if connection.dialect.name == "postgresql" else at.replace(tzinfo=None)


def _populate(connection: Connection) -> None:
    at = _naive(CREATED, connection)
    connection.execute(
        _users.insert(),
        [
            {
                "id": "u-alice",
                "email": "alice@example.com",
                "password_hash": "h",
                "name": "Alice",
                "timezone": "Europe/Berlin",
                "currency": "EUR",
                "tariff": TARIFF,
                "created_at": at,
            },
            {
                "id": "u-bob",
                "email": "bob@example.com",
                "password_hash": "h",
                "name": None,
                "timezone": "Asia/Tokyo",
                "currency": "JPY",
                "tariff": None,
                "created_at": at,
            },
            {
                "id": "u-carol",  # no devices, no rules: still gets a household
                "email": "carol@example.com",
                "password_hash": "h",
                "name": "Carol",
                "timezone": "UTC",
                "currency": "GBP",
                "tariff": None,
                "created_at": at,
            },
        ],
    )
    connection.execute(
        _devices.insert(),
        [
            {
                "id": f"d-{owner}-{n}",
                "owner_id": f"u-{owner}",
                "name": f"{owner} {n}",
                "type": "plug",
                "api_key_hash": f"{owner}{n}".ljust(64, "0"),
                "created_at": at,
            }
            for owner in ("alice", "bob")
            for n in (1, 2)
        ],
    )
    connection.execute(
        _rules.insert(),
        [
            {
                "id": f"r-{owner}",
                "owner_id": f"u-{owner}",
                "device_id": device,
                "name": "r",
                "metric": "power_w",
                "period": "instant",
                "op": "gt",
                "threshold": 1.0,
                "severity": "info",
                "channels": [],
                "created_at": at,
                "updated_at": at,
            }
            for owner, device in (("alice", None), ("bob", "d-bob-1"))
        ],
    )
    connection.execute(
        _alerts.insert(),
        [
            {
                "id": "a-bob",
                "rule_id": "r-bob",
                "owner_id": "u-bob",
                "device_id": "d-bob-1",
                "state": "firing",
                "severity": "info",
                "value": 5.0,
                "peak_value": 5.0,
                "threshold": 1.0,
                "started_at": at,
                "last_seen_at": at,
            }
        ],
    )
    connection.execute(
        _transitions.insert(),
        [
            {
                "id": "t-bob",
                "alert_id": "a-bob",
                "owner_id": "u-bob",
                "state": "firing",
                "payload": {"id": "a-bob"},
                "recorded_at": at,
            }
        ],
    )


def _tariffs(connection: Connection) -> dict[str, object]:
    households = sa.table(
        "households",
        sa.column("id", sa.String),
        sa.column("tariff", sa.JSON(none_as_null=True)),
    )
    rows = connection.execute(sa.select(households.c.id, households.c.tariff)).all()
    return {str(row.id): row.tariff for row in rows}


def _rows(connection: Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(sa.text(sql)).all()]


async def test_upgrade_moves_every_users_things_into_their_own_household(
    metadata_db_url: str,
) -> None:
    db = Database(metadata_db_url)
    await db.start()
    try:
        async with db.begin() as conn:
            await conn.run_sync(_to("0002"))
            await conn.run_sync(_populate)
        await db.migrate()
        async with db.begin() as conn:
            households = await conn.run_sync(
                _rows,
                "SELECT id, name, timezone, currency, country FROM households ORDER BY id",
            )
            tariffs = await conn.run_sync(_tariffs)
            members = await conn.run_sync(
                _rows,
                "SELECT household_id, user_id, role, notify_email FROM household_members"
                " ORDER BY user_id",
            )
            devices = await conn.run_sync(
                _rows, "SELECT id, owner_id, household_id FROM devices ORDER BY id"
            )
            rules = await conn.run_sync(
                _rows, "SELECT id, household_id, device_id FROM alert_rules ORDER BY id"
            )
            alerts = await conn.run_sync(_rows, "SELECT id, household_id FROM alerts")
            transitions = await conn.run_sync(
                _rows, "SELECT id, household_id FROM alert_transitions"
            )
            user_columns = await conn.run_sync(
                lambda c: [col["name"] for col in sa.inspect(c).get_columns("users")]
            )
    finally:
        await db.stop()

    # One household per user, its id the user's, named after them (Bob has no name: his
    # e-mail's local part), with the settings that were the user's.
    assert households == [
        ("u-alice", "Alice's home", "Europe/Berlin", "EUR", None),
        ("u-bob", "bob's home", "Asia/Tokyo", "JPY", None),
        ("u-carol", "Carol's home", "UTC", "GBP", None),
    ]
    assert tariffs == {"u-alice": TARIFF, "u-bob": None, "u-carol": None}
    assert [(h, u, r, bool(n)) for h, u, r, n in members] == [
        ("u-alice", "u-alice", "owner", False),
        ("u-bob", "u-bob", "owner", False),
        ("u-carol", "u-carol", "owner", False),
    ]
    assert devices == [
        ("d-alice-1", "u-alice", "u-alice"),
        ("d-alice-2", "u-alice", "u-alice"),
        ("d-bob-1", "u-bob", "u-bob"),
        ("d-bob-2", "u-bob", "u-bob"),
    ]
    # The rules survived the rebuild of `devices` (on SQLite a cascade would have taken them).
    assert rules == [("r-alice", "u-alice", None), ("r-bob", "u-bob", "d-bob-1")]
    assert alerts == [("a-bob", "u-bob")]
    assert transitions == [("t-bob", "u-bob")]
    assert not {"timezone", "currency", "tariff"} & set(user_columns)


async def test_downgrade_gives_the_settings_back_to_the_users(metadata_db_url: str) -> None:
    db = Database(metadata_db_url)
    await db.start()
    try:
        async with db.begin() as conn:
            await conn.run_sync(_to("0002"))
            await conn.run_sync(_populate)
        await db.migrate()
        async with db.engine.connect() as conn:
            # As Database.migrate() does: SQLite rebuilds tables without cascading.
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.run_sync(_to("0002", down=True))
            await conn.commit()
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()
        async with db.begin() as conn:
            users = await conn.run_sync(
                _rows, "SELECT id, timezone, currency FROM users ORDER BY id"
            )
            devices = await conn.run_sync(_rows, "SELECT id, owner_id FROM devices ORDER BY id")
            rules = await conn.run_sync(_rows, "SELECT id FROM alert_rules ORDER BY id")
    finally:
        await db.stop()
    assert users == [
        ("u-alice", "Europe/Berlin", "EUR"),
        ("u-bob", "Asia/Tokyo", "JPY"),
        ("u-carol", "UTC", "GBP"),
    ]
    assert len(devices) == 4
    assert rules == [("r-alice",), ("r-bob",)]
