"""Alembic environment: online only, on the connection ``JobStore`` hands over.

Users never run ``alembic`` themselves; ``store.migrations.ensure_schema`` drives this with
the connection (and, on PostgreSQL, the advisory lock) it already holds.
"""

from __future__ import annotations

from alembic import context

from jupyter_trainorch.store.orm import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("jupyter_trainorch migrations run only through JobStore (online)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table when needed.
    render_as_batch=connection.dialect.name == "sqlite",
)
# The caller already opened the transaction (and took the lock inside it): this joins it.
with context.begin_transaction():
    context.run_migrations()
