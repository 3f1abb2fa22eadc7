"""A background job that does its work when it starts, whenever it is woken, and every so often
(so a failed run is tried again, and a wakeup lost to a restart costs at most that long)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("pgplane.agent.jobs")


class WokenJob:
    def __init__(self, what: str, work: Callable[[], Awaitable[None]], *, every_seconds: float) -> None:
        self._what = what
        self._work = work
        self._every = every_seconds
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._woken.clear()
            try:
                await self._work()
            except Exception:
                log.exception("%s failed; trying again", self._what)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._woken.wait())]
            try:
                await asyncio.wait(waits, timeout=self._every, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
