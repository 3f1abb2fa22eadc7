"""Engine for the metadata database (SQLAlchemy over asyncpg)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

CONNECT_TIMEOUT = 5.0
IDLE_PING_SECONDS = 5.0
"""A pooled connection idle longer than this is pinged before it is handed out."""


def make_engine(dsn: str, *, pool_size: int = 10) -> AsyncEngine:
    url = sa.make_url(dsn).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, connect_args={"timeout": CONNECT_TIMEOUT}
    )
    _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Hand out live connections without a round trip each time (``pool_pre_ping`` costs three:
    BEGIN, a query, ROLLBACK). A connection the server closed (a restart, a terminated backend)
    is known closed without asking; one that sat idle for ``IDLE_PING_SECONDS`` (long enough for a
    silent network failure) is pinged. Either way a dead one is replaced, with every connection
    opened before it: the pool retries the checkout."""
    pool = engine.sync_engine.pool

    @sa.event.listens_for(pool, "checkin")
    def returned(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    @sa.event.listens_for(pool, "checkout")
    def taken(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise sa.exc.InvalidatePoolError("the server closed the connection")
        returned_at = record.info.get("returned_at")
        if returned_at is not None and time.monotonic() - returned_at > IDLE_PING_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                raise sa.exc.InvalidatePoolError(f"an idle connection failed its ping: {exc}") from exc


def where(dsn: str) -> str:
    """The database a DSN names, for messages (never its password)."""
    url = sa.make_url(dsn)
    return f"{url.host}:{url.port or 5432}/{url.database}"
