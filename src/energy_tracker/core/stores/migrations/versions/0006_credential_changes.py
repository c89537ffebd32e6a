"""The credential change counter: each process's credential cache reads it once a second to
learn of accounts, members, devices and tokens changed in other processes.

Revision ID: 0006_credential_changes
Revises: 0005_access_tokens
Create Date: 2026-11-29

Written by hand (not imported from schema.py), like the revisions before it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_credential_changes"
down_revision = "0005_access_tokens"
branch_labels = None
depends_on = None

TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    table = op.create_table(
        "credential_changes",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credential_changes"),
        **TABLE_OPTIONS,
    )
    op.bulk_insert(table, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("credential_changes")
