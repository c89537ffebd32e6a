"""Households: a home shared by its members, owning the devices, rules, alerts and settings.

Revision ID: 0003_households
Revises: 0002
Create Date: 2026-11-29

Every existing user gets one household, whose id is the user's own id (unique, and it lets
every row that named its owner be moved with one UPDATE that needs no mapping table), named
after them, with the time zone, currency and tariff that were theirs, and them as its owner.
Their devices, alert rules, alerts and alert transitions move into it; the settings columns
leave `users`. Written by hand, like 0001 and 0002.

On SQLite the ALTERs rebuild tables (batch mode); `Database.migrate()` turns foreign-key
enforcement off for the migration there, so rebuilding `devices` does not cascade into the
rules that reference it, and checks every key before it commits.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003_households"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
# The tables whose rows belong to a household from now on (each had an owner_id).
OWNED = ("devices", "alert_rules", "alerts")
CHUNK = 1000
NAME_MAX = 200


def upgrade() -> None:
    _create_tables()
    _one_household_per_user()
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("household_id", sa.String(36), nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET household_id = owner_id"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("household_id", existing_type=sa.String(36), nullable=False)
            batch.create_index(f"ix_{table}_household_id", ["household_id"])
            batch.create_foreign_key(
                f"fk_{table}_household_id_households",
                "households",
                ["household_id"],
                ["id"],
                ondelete="CASCADE",
            )
    with op.batch_alter_table("alert_transitions") as batch:
        batch.add_column(sa.Column("household_id", sa.String(36), nullable=True))
    op.execute(sa.text("UPDATE alert_transitions SET household_id = owner_id"))
    with op.batch_alter_table("alert_transitions") as batch:
        batch.alter_column("household_id", existing_type=sa.String(36), nullable=False)
        batch.drop_index("ix_alert_transitions_owner_recorded")
        batch.create_index(
            "ix_alert_transitions_household_recorded", ["household_id", "recorded_at"]
        )
    with op.batch_alter_table("users") as batch:
        for column in ("timezone", "currency", "tariff"):
            batch.drop_column(column)


def _create_tables() -> None:
    op.create_table(
        "households",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(NAME_MAX), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False, server_default=sa.text("'UTC'")),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'EUR'")),
        sa.Column("tariff", sa.JSON(), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_households"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "household_members",
        sa.Column("household_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("notify_email", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("joined_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("household_id", "user_id", name="pk_household_members"),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name="fk_household_members_household_id_households",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_household_members_user_id_users",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_household_members_user_id", "household_members", ["user_id"])
    op.create_table(
        "household_invitations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("household_id", sa.String(36), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("invited_by", sa.String(36), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("accepted_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_household_invitations"),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name="fk_household_invitations_household_id_households",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["users.id"],
            name="fk_household_invitations_invited_by_users",
            ondelete="SET NULL",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index(
        "ix_household_invitations_household_id", "household_invitations", ["household_id"]
    )
    op.create_index("ix_household_invitations_email", "household_invitations", ["email"])


def household_name(name: str | None, email: str) -> str:
    """What a user's first household is called: after them, as a person would name it."""
    who = name or email.split("@", 1)[0]
    return f"{who}'s home"[:NAME_MAX]


def _one_household_per_user() -> None:
    """Each user's household (id: the user's id), their settings in it, them its owner;
    in chunks, so a million accounts do not sit in memory at once."""
    conn = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("email", sa.String),
        sa.column("timezone", sa.String),
        sa.column("currency", sa.String),
        sa.column("tariff", sa.JSON(none_as_null=True)),
        sa.column("created_at", TIMESTAMP),
    )
    households = sa.table(
        "households",
        *(sa.column(c) for c in ("id", "name", "timezone", "currency", "country", "created_at")),
        sa.column("tariff", sa.JSON(none_as_null=True)),
    )
    members = sa.table(
        "household_members",
        *(sa.column(c) for c in ("household_id", "user_id", "role", "notify_email", "joined_at")),
    )
    after = ""
    while True:
        rows = conn.execute(
            sa.select(users).where(users.c.id > after).order_by(users.c.id).limit(CHUNK)
        ).all()
        if not rows:
            return
        conn.execute(
            households.insert(),
            [
                {
                    "id": r.id,
                    "name": household_name(r.name, r.email),
                    "timezone": r.timezone,
                    "currency": r.currency,
                    "tariff": r.tariff,
                    "country": None,
                    "created_at": r.created_at,
                }
                for r in rows
            ],
        )
        conn.execute(
            members.insert(),
            [
                {
                    "household_id": r.id,
                    "user_id": r.id,
                    "role": "owner",
                    "notify_email": False,
                    "joined_at": r.created_at,
                }
                for r in rows
            ],
        )
        after = rows[-1].id


def downgrade() -> None:
    """The settings go back to each user from a household they own (their first one, whose id
    is theirs when 0003 made it); what only households can say (other members, invitations)
    is lost."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(64), nullable=False, server_default=sa.text("'UTC'"))
        )
        batch.add_column(
            sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'EUR'"))
        )
        batch.add_column(sa.Column("tariff", sa.JSON(), nullable=True))
    conn = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("timezone", sa.String),
        sa.column("currency", sa.String),
        sa.column("tariff", sa.JSON(none_as_null=True)),
    )
    households = sa.table(
        "households",
        sa.column("id", sa.String),
        sa.column("timezone", sa.String),
        sa.column("currency", sa.String),
        sa.column("tariff", sa.JSON(none_as_null=True)),
    )
    members = sa.table(
        "household_members",
        sa.column("household_id", sa.String),
        sa.column("user_id", sa.String),
        sa.column("role", sa.String),
        sa.column("joined_at", TIMESTAMP),
    )
    owned = conn.execute(
        sa.select(
            members.c.user_id, households.c.timezone, households.c.currency, households.c.tariff
        )
        .join(households, households.c.id == members.c.household_id)
        .where(members.c.role == "owner")
        .order_by(members.c.joined_at.desc())
    ).all()
    # Newest first, so each user's oldest household is written last and wins.
    for row in owned:
        conn.execute(
            users.update()
            .where(users.c.id == row.user_id)
            .values(timezone=row.timezone, currency=row.currency, tariff=row.tariff)
        )
    with op.batch_alter_table("alert_transitions") as batch:
        batch.drop_index("ix_alert_transitions_household_recorded")
        batch.create_index("ix_alert_transitions_owner_recorded", ["owner_id", "recorded_at"])
        batch.drop_column("household_id")
    for table in reversed(OWNED):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_household_id_households", type_="foreignkey")
            batch.drop_index(f"ix_{table}_household_id")
            batch.drop_column("household_id")
    op.drop_table("household_invitations")
    op.drop_table("household_members")
    op.drop_table("households")
