"""Heartbeats of the long-running consumers (each agent, the projector): each publishes the time
every few seconds on its own subject of the heartbeats stream, which keeps only the last message
per subject; ``/readyz`` reads them all. A dead process's last heartbeat stays, so it shows as a
stale heartbeat, not as nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas.subjects import Subjects

log = logging.getLogger("pgplane.heartbeats")
INTERVAL_SECONDS = 5.0
STALE_SECONDS = 3 * INTERVAL_SECONDS
"""A heartbeat older than this says its process is down."""


class Heartbeats:
    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

    async def beat(self, name: str) -> None:
        body = json.dumps({"at": datetime.now(UTC).isoformat()}).encode()
        await self._js.publish(self._subjects.heartbeat(name), body, stream=self._subjects.heartbeats_stream)

    async def run(self, name: str, stop: asyncio.Event, *, interval: float = INTERVAL_SECONDS) -> None:
        """Beat until ``stop`` is set; a failed beat is logged and tried again at the next one."""
        while not stop.is_set():
            try:
                await self.beat(name)
            except Exception:
                log.warning("heartbeat %s failed; retrying", name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def last(self, name: str) -> datetime | None:
        """The last heartbeat of one process; ``None`` if it never sent one."""
        try:
            message = await self._js.get_last_msg(self._subjects.heartbeats_stream, self._subjects.heartbeat(name))
        except NotFoundError:
            return None
        return datetime.fromisoformat(json.loads(message.data or b"{}")["at"])

    async def read(self) -> dict[str, datetime]:
        """The last heartbeat of every process that ever sent one, by name."""
        stream = self._subjects.heartbeats_stream
        info = await self._js.stream_info(stream, subjects_filter=self._subjects.heartbeat(">"))
        found = {}
        for subject in info.state.subjects or {}:
            message = await self._js.get_last_msg(stream, subject)
            found[self._subjects.heartbeat_name(subject)] = datetime.fromisoformat(
                json.loads(message.data or b"{}")["at"]
            )
        return found
