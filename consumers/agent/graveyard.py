"""Databases and roles set aside by deletes and resets, dropped in the background.

A delete or a reset makes the tenant's database unreachable at once (``HostPostgres.
set_aside_database``: closed and renamed ``gone_<hex>`` in one catalog update) and this job drops
it right after, off the operation's path: PostgreSQL 15's ``DROP DATABASE`` checkpoints the whole
cluster first, which took 100 ms of a delete's 140 on an empty host and grew with the host's dirty
buffers. Roles set aside go after the databases, which they may own or hold objects in.

Nothing else sees them: they are not tenant-named (``db_<id>``, ``u_<id>``), so the host's state
report, the reconciler and a restore's selective unpack pass them by. Whatever a crash left set
aside is dropped when the agent starts again.
"""

from __future__ import annotations

import asyncio

from consumers.agent.woken_job import WokenJob
from infra.host_postgres import HostPostgres

LOOK_AGAIN_SECONDS = 60.0
"""How often the job looks even when nothing woke it (a failed drop is tried again)."""


class Graveyard:
    def __init__(self, postgres: HostPostgres) -> None:
        self._postgres = postgres
        self._job = WokenJob("dropping what was set aside", postgres.drop_gone, every_seconds=LOOK_AGAIN_SECONDS)

    async def set_aside_database(self, dbname: str) -> None:
        await self._postgres.set_aside_database(dbname)
        self._job.wake()

    async def set_aside_role(self, role: str) -> None:
        await self._postgres.set_aside_role(role)
        self._job.wake()

    async def run(self, stop: asyncio.Event) -> None:
        await self._job.run(stop)
