"""Waiting for a PostgreSQL notification (``LISTEN``) or a timeout, whichever comes first: the
webhook dispatcher wakes as soon as the projector commits public events, and still polls; an
API request waiting for an operation wakes as soon as the projector commits its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("pgplane.notifications")
EVENTS_CHANNEL = "pgplane_events"
RELISTEN_SECONDS = 1.0


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notified(self, *_: Any) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """``True`` when a notification came (since the last wait), ``False`` at the timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


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


class Waiters:
    """Wakeups by notification payload: whoever watches a key wakes when that key is notified."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[Wakeup]] = {}

    def notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        for wakeup in self._by_key.get(payload, ()):
            wakeup.notified()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Wakeup]:
        """Watch ``key`` from now on (watch first, then read: a notification in between is kept)."""
        wakeup = Wakeup()
        self._by_key.setdefault(key, set()).add(wakeup)
        try:
            yield wakeup
        finally:
            watching = self._by_key[key]
            watching.discard(wakeup)
            if not watching:
                del self._by_key[key]

    def wake_all(self) -> None:
        for watching in self._by_key.values():
            for wakeup in watching:
                wakeup.notified()

    async def listen(self, engine: AsyncEngine, channel: str, stop: asyncio.Event) -> None:
        """Hold a ``LISTEN`` on ``channel`` until ``stop``, on a connection of its own, opened again
        when it is lost. Notifications sent while no connection listened are missed, so every
        watcher wakes once each time the ``LISTEN`` is in place (and looks again); a connection
        lost without a word is what their own timeout is for."""
        while not stop.is_set():
            try:
                await self._listen_once(engine, channel, stop)
            except Exception as exc:  # the server went away (or never came): listen again
                log.warning("listening on %s failed (%s: %s); trying again", channel, type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RELISTEN_SECONDS)

    async def _listen_once(self, engine: AsyncEngine, channel: str, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None  # asyncpg's connection, held by this context
            raw.add_termination_listener(lambda _: lost.set())
            await raw.add_listener(channel, self.notified)
            self.wake_all()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if lost.is_set():
                raise ConnectionError("the listening connection was lost")
            await raw.remove_listener(channel, self.notified)
