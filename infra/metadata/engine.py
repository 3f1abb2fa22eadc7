"""Engine for the metadata database (SQLAlchemy over asyncpg)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

CONNECT_TIMEOUT = 5.0


def make_engine(dsn: str, *, pool_size: int = 10) -> AsyncEngine:
    url = sa.make_url(dsn).set(drivername="postgresql+asyncpg")
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT}
    )


def where(dsn: str) -> str:
    """The database a DSN names, for messages (never its password)."""
    url = sa.make_url(dsn)
    return f"{url.host}:{url.port or 5432}/{url.database}"
