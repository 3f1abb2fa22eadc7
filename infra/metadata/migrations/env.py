"""Alembic environment for the metadata database. ``infra.metadata.migrate`` configures it:
the connection arrives in ``config.attributes["connection"]``; nothing reads an alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
