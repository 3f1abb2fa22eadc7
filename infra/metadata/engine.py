"""Engine for the metadata database (SQLAlchemy over asyncpg)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_engine(dsn: str, *, pool_size: int = 10) -> AsyncEngine:
    url = sa.make_url(dsn).set(drivername="postgresql+asyncpg")
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
