"""Point-in-time restore of ONE database: seal the WAL, check the archive, recover a temporary
cluster from a base backup to the target time (fetching the WAL as recovery asks for it), copy
the one database out of it into a scratch database, drop the temporary cluster, then swap the
scratch database in like a backup restore.

Sealing first (a commit, then a WAL switch, then waiting until that segment is archived) puts a
commit after any target in the past into the archive, so recovery always has a record to stop
at. A WAL segment missing before the target fails the restore with its name, before anything
is changed; the original database is only touched by the final swap.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import TypeVar

from consumers.agent.host import Host
from consumers.agent.ledger import ArchivedSegment, BaseBackup
from consumers.agent.saga import StepOutput
from consumers.agent.steps.swap import Swap
from consumers.agent.temp_cluster import TempCluster
from consumers.agent.wal_archiver import decompressed
from infra.backup_crypto import BackupIntegrityError, decrypt_stream
from infra.errors import PermanentError, within_deadline
from infra.host_postgres import GONE_PREFIX
from infra.object_store import ObjectNotFound
from infra.pg_tools import PgToolError, pg_dump, pg_restore
from infra.processes import owned_file
from infra.wal import base_context, base_part_context, next_segment, wal_context, wal_object_key
from schemas.commands import PointInTimeCommand
from schemas.envelope import Envelope

T = TypeVar("T")
SEAL_POLL = 0.05
LOOKAHEAD = 4
"""WAL segments fetched ahead of the one recovery is waiting for (16 MiB each)."""
TENANT_DATABASE_PREFIX = "db_"


class Recovered(StepOutput):
    databases_left_out: int
    """Other databases of the host whose files the restore did not unpack."""
    wal_segments_fetched: int = 0
    """The archived WAL segments recovery read (fetched on demand, up to its target)."""


def _other_databases(base: BaseBackup, dbname: str) -> list[int]:
    """The OIDs of the other tenants' databases in the base backup; none when the backup does not
    say which directory is which.

    Left out: live tenant databases (``db_<id>``), as no rename ever gives one of them another live
    tenant database's name, and databases a delete or a reset set aside (``gone_``), which are only
    ever dropped. A scratch (``rs_``) or kept (``ro_``) database of a restore may become the
    restored database by the target time, and so may a warm one (``warm_``, renamed by a create):
    they stay. System, platform and warm databases are small.
    """
    oids = base.database_oids or {}
    return [
        oid
        for name, oid in oids.items()
        if (name.startswith(TENANT_DATABASE_PREFIX) and name != dbname) or name.startswith(GONE_PREFIX)
    ]


def _ahead(segment: str, count: int) -> str:
    for _ in range(count):
        segment = next_segment(segment)
    return segment


class PointInTime:
    """The database as it was at the target time, recovered in a temporary cluster and copied out."""

    def __init__(self, host: Host, cmd: PointInTimeCommand, envelope: Envelope) -> None:
        self.host = host
        self.cmd = cmd
        self.swap = Swap(host, cmd, envelope)
        self.cluster = TempCluster(self.swap.work_dir / "cluster", host.admin_dsn)
        self._gap: str | None = None
        self._fetched = 0

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

    async def check_wal(self) -> None:
        """The archive holds the WAL from the base backup's start to past the target, from the
        ledger and the store's metadata (nothing is downloaded): a gap fails the restore with its
        name before anything is unpacked."""
        await self._within("checking the WAL", self._check_wal())

    async def _check_wal(self) -> None:
        for archived in await self._segments():
            if await self.host.store.size(wal_object_key(self.host.host_id, archived.segment)) is None:
                raise self._missing(archived.segment, None)
            if archived.archived_at >= self.cmd.point_in_time:
                return  # the segment the target falls in; recovery fetches on from there as it needs

    async def _segments(self) -> list[ArchivedSegment]:
        """The archived segments recovery may read, in order: from the base backup's start to the
        first gap. A gap fails the restore when the target lies past the segment before it (or the
        base backup needs it); a gap after the target only ends the WAL recovery will see."""
        base = await self._base()
        run: list[ArchivedSegment] = []
        expected, reached = base.start_segment, None
        for archived in await self.host.ledger.segments_from(base.start_segment):
            if archived.segment != expected:
                break
            run.append(archived)
            expected, reached = next_segment(expected), archived.archived_at
        if expected <= base.stop_segment:
            raise PermanentError(f"WAL segment {expected}, needed by the base backup, was never archived")
        if reached is None or self.cmd.point_in_time >= reached:
            raise self._missing(expected, reached)
        return run

    def _missing(self, segment: str, reached: datetime | None) -> PermanentError:
        return PermanentError(
            f"WAL segment {segment} is missing from the archive: the database cannot be restored"
            f" to {self.cmd.point_in_time.isoformat()}"
            + (f" (archived WAL ends at {reached.isoformat()})" if reached else "")
        )

    async def _feed(self, run: list[ArchivedSegment]) -> None:
        """Recovery's WAL, on demand: each segment of ``run`` in order, checked, into the cluster's
        WAL directory, at most ``LOOKAHEAD`` segments ahead of the one recovery waits for. So a
        restore downloads the WAL up to its target, not everything archived since the base backup.
        A segment gone from the store ends the WAL there (recovery then says whether it needed it)."""
        for archived in run:
            while archived.segment > _ahead(self.cluster.wanted() or run[0].segment, LOOKAHEAD):
                await asyncio.sleep(SEAL_POLL)
            if not (self.cluster.wal / archived.segment).exists():  # fetched by an earlier attempt
                try:
                    await self._fetch_segment(archived.segment, archived.sha256)
                except ObjectNotFound:
                    self._gap = archived.segment
                    break
            self._fetched += 1
        self.cluster.end_wal()

    async def _fetch_segment(self, segment: str, sha256: str) -> None:
        """One segment, checked, put in place under its name at once (recovery may be waiting for it)."""
        hasher = hashlib.sha256()

        async def stored() -> AsyncIterator[bytes]:
            async for piece in self.host.store.get(wal_object_key(self.host.host_id, segment)):
                hasher.update(piece)
                yield piece

        context = wal_context(self.host.host_id, segment)
        path = self.cluster.wal / f".{segment}.part"
        try:
            with path.open("wb") as file:
                plain = decompressed(decrypt_stream(stored(), keys=self.host.backup_keys, context=context))
                async for piece in plain:
                    await asyncio.to_thread(file.write, piece)
        except (BackupIntegrityError, ValueError) as exc:
            raise PermanentError(f"WAL segment {segment} in the object store is damaged", detail=exc) from None
        if hasher.hexdigest() != sha256:
            raise PermanentError(f"WAL segment {segment} in the object store failed its checksum")
        owned_file(path).rename(self.cluster.wal / segment)

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
        run = await self._segments()
        self.cluster.reset_wal()
        feeding = asyncio.create_task(self._feed(run))
        recovering = asyncio.create_task(self.cluster.recover(self.cmd.point_in_time, left_out=leave_out))
        try:
            await asyncio.wait({feeding, recovering}, return_when=asyncio.FIRST_COMPLETED)
            if not recovering.done():
                await feeding  # a damaged segment fails the restore; else the WAL has ended
            await recovering
        except PermanentError:
            if self._gap is not None:  # recovery needed the WAL past a segment gone from the store
                raise self._missing(self._gap, None) from None
            raise
        finally:
            for task in (feeding, recovering):
                task.cancel()
            await asyncio.gather(feeding, recovering, return_exceptions=True)
        return Recovered(databases_left_out=len(leave_out), wal_segments_fetched=self._fetched)

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
