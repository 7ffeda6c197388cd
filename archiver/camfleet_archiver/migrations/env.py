"""Alembic environment: always run online, on the connection `schema.migrate` hands over.

That connection already holds the migration advisory lock, so N replicas starting at once apply
each revision exactly once.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
