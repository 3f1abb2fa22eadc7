"""Verifier drift: PostgreSQL lets a role change its own password (``ALTER ROLE current_user
PASSWORD ...``), after which PostgreSQL, PgBouncer's copy and the API's credentials disagree. Every
minute the agent compares what PostgreSQL holds for each routed tenant role with what PgBouncer
routes with, and reports a difference once, as ``database.verifier_drifted``; the next rotation of
the database sets one password everywhere again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

from consumers.agent.host import Host
from consumers.agent.wal_archiver import Publish, host_event
from infra.metrics import DRIFT
from schemas.events import VerifierDrifted

log = logging.getLogger("pgplane.drift")
INTERVAL_SECONDS = 60.0


class VerifierWatch:
    def __init__(self, host: Host, publish: Publish) -> None:
        self.host = host
        self.publish = publish
        self._reported: set[str] = set()

    async def run(self, stop: asyncio.Event, *, interval: float = INTERVAL_SECONDS) -> None:
        while not stop.is_set():
            try:
                await self.check()
            except Exception:
                log.warning("verifier check failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def check(self) -> list[str]:
        """The roles whose password drifted; each is reported once per drifted password."""
        drifted = []
        for route in await self.host.ledger.routes():
            held = await self.host.postgres.verifier(route.role)
            if held is None or held == route.verifier:
                continue
            drifted.append(route.role)
            fingerprint = hashlib.sha256(held.encode()).hexdigest()[:16]
            if fingerprint in self._reported:
                continue
            event = VerifierDrifted(host_id=self.host.host_id, database_id=route.database_id, dbname=route.dbname)
            await self.publish(host_event(event, host_id=self.host.host_id, key=f"drift:{route.role}:{fingerprint}"))
            self._reported.add(fingerprint)
            DRIFT.labels(kind="verifier").inc()
        return drifted
