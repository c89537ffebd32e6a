"""Device roles: what each device measures in its home (grid, production, battery, ev_charger,
sub, consumer), and the device a sub-meter sits inside.

Revision ID: 0004_device_roles
Revises: 0003_households
Create Date: 2026-11-29

Existing devices become `consumer` (a load measured on its own, with no parent), so a home sums
exactly as it did until its owner says which device is the main meter. There is no foreign key
on parent_id: the devices store keeps it valid (a parent is checked when set, and deleting a
device lets its sub-meters go top level), and SQLite could only add one by rebuilding `devices`,
which the tables referencing it would not survive with foreign keys on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_device_roles"
down_revision = "0003_households"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "devices",
        sa.Column("role", sa.String(16), nullable=False, server_default="consumer"),
    )
    op.add_column("devices", sa.Column("parent_id", sa.String(36), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): a batch rebuild of `devices`
    # would drop the table, and with it, through the foreign keys, its devices' rules.
    op.drop_column("devices", "parent_id")
    op.drop_column("devices", "role")
