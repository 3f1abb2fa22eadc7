"""Engine for the metadata database (SQLAlchemy over asyncpg) and schema creation."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import SQLModel

import infra.metadata.models  # noqa: F401  (registers the tables)


def make_engine(dsn: str, *, pool_size: int = 10) -> AsyncEngine:
    url = sa.make_url(dsn).set(drivername="postgresql+asyncpg")
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


async def create_schema(conn: AsyncConnection, schema: str | None = None) -> None:
    """Create every table (idempotent); in ``schema`` when given, e.g. for a replay."""
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgplane metadata schema'))"))
    if schema:
        await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn = await conn.execution_options(schema_translate_map={None: schema})
    await conn.run_sync(SQLModel.metadata.create_all)
