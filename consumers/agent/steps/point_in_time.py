"""Point-in-time restore of ONE database: seal the WAL, fetch and check it, recover a temporary
cluster from a base backup to the target time, copy the one database out of it into a scratch
database, drop the temporary cluster, then swap the scratch database in like a backup restore.

Sealing first (a commit, then a WAL switch, then waiting until that segment is archived) puts a
commit after any target in the past into the archive, so recovery always has a record to stop
at. A WAL segment missing before the target fails the restore with its name, before anything
is changed; the original database is only touched by the final swap.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from consumers.agent.host import Host
from consumers.agent.ledger import BaseBackup
from consumers.agent.saga import StepOutput
from consumers.agent.steps.swap import Swap
from consumers.agent.temp_cluster import TempCluster
from consumers.agent.wal_archiver import decompressed
from infra.backup_crypto import BackupIntegrityError, decrypt_stream
from infra.errors import PermanentError, within_deadline
from infra.object_store import ObjectNotFound
from infra.pg_tools import PgToolError, pg_dump, pg_restore
from infra.processes import owned_dir
from infra.wal import base_context, base_part_context, next_segment, wal_context, wal_object_key
from schemas.commands import PointInTimeCommand
from schemas.envelope import Envelope

T = TypeVar("T")
SEAL_POLL = 0.05
TENANT_DATABASE_PREFIX = "db_"


class Recovered(StepOutput):
    databases_left_out: int
    """Other databases of the host whose files the restore did not unpack."""


def _other_databases(base: BaseBackup, dbname: str) -> list[int]:
    """The OIDs of the other tenants' databases in the base backup; none when the backup does not
    say which directory is which.

    Only live tenant databases (``db_<id>``) are left out: no rename ever gives one of them another
    live tenant database's name, while a scratch (``rs_``) or kept (``ro_``) database of a restore
    may become the restored database by the target time. System and platform databases are small.
    """
    oids = base.database_oids or {}
    return [oid for name, oid in oids.items() if name.startswith(TENANT_DATABASE_PREFIX) and name != dbname]


class PointInTime:
    """The database as it was at the target time, recovered in a temporary cluster and copied out."""

    def __init__(self, host: Host, cmd: PointInTimeCommand, envelope: Envelope) -> None:
        self.host = host
        self.cmd = cmd
        self.swap = Swap(host, cmd, envelope)
        self.cluster = TempCluster(self.swap.work_dir / "cluster", host.admin_dsn)

    async def _within(self, what: str, work: Awaitable[T]) -> T:
        return await within_deadline(self.host.deadline_seconds, what, work)

    async def _base(self) -> BaseBackup:
        base = await self.host.ledger.base_backup(self.cmd.base_backup_id)
        if base is None:
            raise PermanentError("the base backup this restore starts from has been deleted")
        return base

    async def seal(self) -> None:
        """Commit, switch to a new WAL segment and wait until the finished one is archived."""
        if self.host.wal_spool is None:
            raise PermanentError("WAL archiving is not enabled on this data host")
        sealed = await self.host.postgres.seal_wal()

        async def archived() -> None:
            while not [s for s in await self.host.ledger.segments_from(sealed) if s.segment == sealed]:
                await asyncio.sleep(SEAL_POLL)

        await self._within("archiving the WAL up to now", archived())

    async def fetch_wal(self) -> None:
        try:
            await self._within("fetching the WAL", self._fetch_wal())
        except BaseException:
            await self.swap.remove_work_dir()  # a refused restore leaves nothing behind
            raise

    async def _fetch_wal(self) -> None:
        """Every archived segment from the base backup's start on, each checked.

        A gap (never archived, or gone from the store) fails the restore when the target lies past
        the segment before it; a gap after the target only ends the WAL recovery will see.
        """
        base = await self._base()
        owned_dir(self.cluster.wal)
        expected, reached = base.start_segment, None
        for archived in await self.host.ledger.segments_from(base.start_segment):
            try:
                if archived.segment != expected:
                    raise ObjectNotFound(expected)
                await self._fetch_segment(archived.segment, archived.sha256)
            except ObjectNotFound:
                if expected <= base.stop_segment or reached is None or self.cmd.point_in_time >= reached:
                    raise PermanentError(
                        f"WAL segment {expected} is missing from the archive: the database cannot be restored"
                        f" to {self.cmd.point_in_time.isoformat()}"
                        + (f" (archived WAL ends at {reached.isoformat()})" if reached else "")
                    ) from None
                break
            expected, reached = next_segment(expected), archived.archived_at
        if expected <= base.stop_segment:
            raise PermanentError(f"WAL segment {expected}, needed by the base backup, was never archived")
        owned_dir(self.cluster.wal)

    async def _fetch_segment(self, segment: str, sha256: str) -> None:
        hasher = hashlib.sha256()

        async def stored() -> AsyncIterator[bytes]:
            async for piece in self.host.store.get(wal_object_key(self.host.host_id, segment)):
                hasher.update(piece)
                yield piece

        context = wal_context(self.host.host_id, segment)
        path = self.cluster.wal / segment
        try:
            with path.open("wb") as file:
                plain = decompressed(decrypt_stream(stored(), keys=self.host.backup_keys, context=context))
                async for piece in plain:
                    await asyncio.to_thread(file.write, piece)
        except (BackupIntegrityError, ValueError) as exc:
            raise PermanentError(f"WAL segment {segment} in the object store is damaged", detail=exc) from None
        if hasher.hexdigest() != sha256:
            raise PermanentError(f"WAL segment {segment} in the object store failed its checksum")

    async def recover(self) -> Recovered:
        """A temporary cluster at the target time; on any failure it is stopped and removed again."""
        try:
            return await self._within("point-in-time recovery", self._recover())
        except BaseException:
            await self.cluster.stop()
            raise

    async def _recover(self) -> Recovered:
        base = await self._base()
        leave_out = _other_databases(base, self.cmd.source_dbname)
        archives = [self._stored(base.object_key, base.sha256, base_context(self.host.host_id, base.id))]
        for oid, part in (base.parts or {}).items():
            if int(oid) not in leave_out:
                context = base_part_context(self.host.host_id, base.id, oid)
                archives.append(self._stored(part["object_key"], part["sha256"], context))
        await self.cluster.unpack(archives, leave_out=leave_out)
        self.host.faults.crash_point(f"{self.cmd.KIND.value}.recovering")
        await self.cluster.recover(self.cmd.point_in_time, left_out=leave_out)
        return Recovered(databases_left_out=len(leave_out))

    async def _stored(self, key: str, sha256: str, context: str) -> AsyncIterator[bytes]:
        """One archive of the base backup from the store, authenticated and checked as it streams."""
        hasher = hashlib.sha256()

        async def stored() -> AsyncIterator[bytes]:
            try:
                async for piece in self.host.store.get(key):
                    hasher.update(piece)
                    yield piece
            except ObjectNotFound:
                raise PermanentError("the base backup's object is missing from the object store") from None
            if hasher.hexdigest() != sha256:
                raise PermanentError("the base backup in the object store failed its checksum")

        try:
            async for piece in decrypt_stream(stored(), keys=self.host.backup_keys, context=context):
                yield piece
        except BackupIntegrityError as exc:
            raise PermanentError("the base backup failed authentication", detail=exc) from None

    async def extract(self) -> None:
        """The one database, copied out of the temporary cluster into a fresh scratch database."""
        await self.cluster.start()
        await self.swap.create_scratch(self.cmd.role)

        async def copy() -> None:
            async with pg_dump(self.cluster.dsn, self.cmd.source_dbname) as dump:
                await pg_restore(self.host.admin_dsn, self.swap.scratch, dump, role=self.cmd.role)

        try:
            await self._within("copying the database out", copy())
        except PgToolError as exc:
            await self.swap.drop_scratch()
            raise PermanentError("the database cannot be copied out of the recovered cluster", detail=exc) from exc
        except BaseException:
            await self.swap.drop_scratch()
            raise

    async def remove_cluster(self) -> None:
        await self.cluster.remove()
