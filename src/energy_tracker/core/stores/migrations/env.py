"""Alembic environment: runs the revisions on a connection handed in by `Database.migrate()`.

There is no alembic.ini and no URL here: `Database.migrate()` opens a transaction on its async
engine and calls Alembic inside `connection.run_sync`, passing that (sync-facade) connection in
`config.attributes["connection"]`, so migrations use exactly the engine the service runs on.
"""

from __future__ import annotations

from alembic import context

from energy_tracker.core.stores.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "energy-tracker migrations run through Database.migrate(), which supplies the connection"
    )

# render_as_batch lets a later ALTER work on SQLite, which rebuilds the table to alter it.
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
