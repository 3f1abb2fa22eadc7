"""Databases made ahead of the creates that take them.

``CREATE DATABASE`` copies the template's files (about 300) and is most of a create's time: 40 to
200 ms on a small host, more on a full one. Renaming a database and giving it an owner is a
catalog update of about 1.5 ms. So the agent keeps ``PGPLANE_AGENT_WARM_DATABASES`` empty
databases (``warm_<hex>``, which no one may connect to); a create takes one (rename, owner and
connections in one transaction) and this job makes the next one in the background. With none
left (a burst, or the setting at 0) a create makes its database itself, as before.

Nothing else sees them: they are not tenant databases (``db_<id>``), so the host's state report,
the reconciler and a restore's selective unpack pass them by.
"""

from __future__ import annotations

import asyncio

from consumers.agent.woken_job import WokenJob
from infra.host_postgres import HostPostgres

LOOK_AGAIN_SECONDS = 5.0
"""How often the job checks the count even when no create took one (a failed fill is retried)."""


class WarmDatabases:
    def __init__(self, postgres: HostPostgres, size: int) -> None:
        self._postgres = postgres
        self.size = size
        self._job = WokenJob("making warm databases", self.fill, every_seconds=LOOK_AGAIN_SECONDS)

    async def take(self, dbname: str, *, owner: str) -> bool:
        """``dbname`` from a warm database (see ``HostPostgres.take_warm_database``)."""
        if self.size == 0:
            return False
        try:
            return await self._postgres.take_warm_database(dbname, owner=owner)
        finally:
            self._job.wake()

    async def fill(self) -> None:
        for _ in range(self.size - await self._postgres.warm_databases()):
            await self._postgres.make_warm_database()

    async def run(self, stop: asyncio.Event) -> None:
        if self.size > 0:
            await self._job.run(stop)
