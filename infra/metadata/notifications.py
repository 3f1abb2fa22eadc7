"""Waiting for a PostgreSQL notification (``LISTEN``) or a timeout, whichever comes first: the
webhook dispatcher wakes as soon as the projector commits public events, and still polls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

EVENTS_CHANNEL = "pgplane_events"


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notified(self, *_: Any) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


@contextlib.asynccontextmanager
async def listening(engine: AsyncEngine, channel: str = EVENTS_CHANNEL) -> AsyncIterator[Wakeup]:
    """A connection held for the ``LISTEN``; the wakeup fires on every notification."""
    wakeup = Wakeup()
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None  # asyncpg's connection, held by this context
        await raw.add_listener(channel, wakeup.notified)
        try:
            yield wakeup
        finally:
            with contextlib.suppress(Exception):
                await raw.remove_listener(channel, wakeup.notified)
