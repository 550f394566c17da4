"""Alembic environment of the trial store (run programmatically by storage.migrate)."""

from __future__ import annotations

from alembic import context

from schedsearch.storage.migrate import VERSION_TABLE, include_object
from schedsearch.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_object=include_object,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
