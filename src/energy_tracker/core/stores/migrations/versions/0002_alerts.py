"""Alert rules, their evaluation state, alerts, transitions and the notification outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Written by hand (not imported from schema.py), like 0001, so this revision keeps creating
exactly these tables however the schema module evolves later.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Aware timestamps: TIMESTAMPTZ on PostgreSQL; MySQL gets microseconds so creation order survives.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# On MySQL/MariaDB every table is InnoDB (foreign keys, row locks) and utf8mb4 (any text).
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("op", sa.String(2), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("clear_threshold", sa.Double(), nullable=True),
        sa.Column("for_s", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("cooldown_s", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_alert_rules_owner_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_alert_rules_device_id_devices",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_alert_rules_owner_id", "alert_rules", ["owner_id"])
    op.create_index("ix_alert_rules_device_id", "alert_rules", ["device_id"])

    op.create_table(
        "alert_states",
        sa.Column("rule_id", sa.String(36), nullable=False),
        sa.Column("scope", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=True),
        sa.Column("pending_since", sa.BigInteger(), nullable=True),
        sa.Column("firing_since", sa.BigInteger(), nullable=True),
        sa.Column("peak", sa.Double(), nullable=True),
        sa.Column("cooldown_until", sa.BigInteger(), nullable=True),
        sa.Column("period_end", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("rule_id", "scope", name="pk_alert_states"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name="fk_alert_states_rule_id_alert_rules",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("rule_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("acknowledged_at", TIMESTAMP, nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("peak_value", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name="fk_alerts_rule_id_alert_rules",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_alerts_owner_id_users", ondelete="CASCADE"
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_alerts_rule_id", "alerts", ["rule_id"])
    op.create_index("ix_alerts_owner_id", "alerts", ["owner_id"])

    op.create_table(
        "alert_transitions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_alert_transitions"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_transitions_alert_id_alerts",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_alert_transitions_alert_id", "alert_transitions", ["alert_id"])
    op.create_index(
        "ix_alert_transitions_owner_recorded", "alert_transitions", ["owner_id", "recorded_at"]
    )
    op.create_index(
        "ix_alert_transitions_unpublished", "alert_transitions", ["published", "recorded_at"]
    )

    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(256), nullable=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_deliveries_alert_id_alerts",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status", "next_attempt_at"])

    op.create_table(
        "alert_delivery_attempts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["alert_deliveries.id"],
            name="fk_alert_delivery_attempts_delivery_id_alert_deliveries",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index(
        "ix_alert_delivery_attempts_delivery_id", "alert_delivery_attempts", ["delivery_id"]
    )

    op.create_table(
        "alert_device_seen",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column("power_w", sa.Double(), nullable=True),
        sa.Column("power_ts", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name="pk_alert_device_seen"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_alert_device_seen_device_id_devices",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "alert_usage",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("granularity", sa.String(8), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("energy_kwh", sa.Double(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "granularity", "period_start", name="pk_alert_usage"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_alert_usage_device_id_devices",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    # Children first; dropping a table drops its indexes.
    for table in (
        "alert_usage",
        "alert_device_seen",
        "alert_delivery_attempts",
        "alert_deliveries",
        "alert_transitions",
        "alerts",
        "alert_states",
        "alert_rules",
    ):
        op.drop_table(table)
