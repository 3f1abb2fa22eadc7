"""Putting restored data in place, and the operation's scratch space, shared by every restore saga.

Data is first restored into a scratch database (``rs_<operation>``). In place, two renames in one
transaction make the scratch database the live one and keep the original as ``ro_<operation>``
until the swap has succeeded; undoing the swap puts the original back. Into a new database, the
scratch database is simply renamed to the new physical name. Every step checks reality first.
"""

from __future__ import annotations

import asyncio
import shutil

from consumers.agent.host import Host
from consumers.agent.work_dirs import operation_work_dir
from schemas.commands import DatabaseCommand
from schemas.envelope import Envelope


class Swap:
    def __init__(self, host: Host, cmd: DatabaseCommand, envelope: Envelope) -> None:
        self.host = host
        self.cmd = cmd
        operation = envelope.correlation_id.hex
        self.work_dir = operation_work_dir(host.work_dir, envelope.correlation_id)
        self.scratch = f"rs_{operation}"
        self.kept = f"ro_{operation}"

    async def swap_in(self) -> None:
        pg = self.host.postgres
        if await pg.database_exists(self.kept) and not await pg.database_exists(self.scratch):
            return  # swapped before a crash
        async with self.host.bouncer.paused(self.cmd.dbname):
            await pg.swap_databases(live=self.cmd.dbname, replacement=self.scratch, keep_as=self.kept)

    async def swap_back(self) -> None:
        pg = self.host.postgres
        if not await pg.database_exists(self.kept):
            return  # never swapped, or already swapped back
        async with self.host.bouncer.paused(self.cmd.dbname):
            await pg.swap_databases(live=self.cmd.dbname, replacement=self.kept, keep_as=self.scratch)

    async def rename_into_place(self) -> None:
        pg = self.host.postgres
        if not await pg.database_exists(self.cmd.dbname):
            await pg.rename_database(self.scratch, self.cmd.dbname)

    async def create_scratch(self, owner: str | None) -> None:
        """An empty scratch database (emptied again on a retry); only ``owner`` may connect."""
        pg = self.host.postgres
        await pg.drop_database(self.scratch)
        await pg.ensure_database(self.scratch, owner=owner or "postgres")
        if owner:
            await pg.revoke_public(self.scratch, owner=owner)

    async def drop_scratch(self) -> None:
        await self.host.postgres.drop_database(self.scratch)

    async def drop_kept(self) -> None:
        await self.host.postgres.drop_database(self.kept)

    async def remove_work_dir(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
