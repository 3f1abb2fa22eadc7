"""Heartbeats of the long-running consumers (each agent, the projector) in a NATS key-value bucket:
each writes the time every few seconds under its own key, and ``/readyz`` reads them all. A key
stays after its process dies, so a dead process shows as a stale heartbeat, not as nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger("pgplane.heartbeats")
INTERVAL_SECONDS = 5.0
STALE_SECONDS = 3 * INTERVAL_SECONDS
"""A heartbeat older than this says its process is down."""


class Heartbeats:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def beat(self, key: str) -> None:
        await self._kv.put(key, json.dumps({"at": datetime.now(UTC).isoformat()}).encode())

    async def run(self, key: str, stop: asyncio.Event, *, interval: float = INTERVAL_SECONDS) -> None:
        """Beat until ``stop`` is set; a failed beat is logged and tried again at the next one."""
        while not stop.is_set():
            try:
                await self.beat(key)
            except Exception:
                log.warning("heartbeat %s failed; retrying", key, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def read(self) -> dict[str, datetime]:
        """The last heartbeat of every process that ever sent one."""
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return {}
        found = {}
        for key in keys:
            entry = await self._kv.get(key)
            if entry.value:
                found[key] = datetime.fromisoformat(json.loads(entry.value)["at"])
        return found
