"""The backup sagas: back up, restore in place, restore into a new database, drill, delete.

A backup streams ``pg_dump -Fc`` → AES-256-GCM chunks → SHA-256 → the object store, never
holding more than a chunk in memory, under a deterministic object key: a redelivered command
rewrites the same object, it can never leave two. The store only shows an object once it is
complete, so a crashed upload leaves nothing but an incomplete upload, which the retry aborts.

A restore first downloads the object into the operation's work directory and checks it whole
(SHA-256 recorded at backup time, then every chunk's authentication tag) before it touches any
database. It restores into a scratch database, then swaps that in with two renames in one
transaction; the original is kept under another name until the swap has succeeded, and undoing
the swap puts it back. Every step can run again after a crash: it starts from scratch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import psycopg
from psycopg.conninfo import make_conninfo

from consumers.agent.host import Host
from consumers.agent.saga import StepOutput
from consumers.agent.steps.swap import Swap
from infra.backup_crypto import BackupIntegrityError, decrypt_stream, encrypt_stream
from infra.errors import PermanentError, within_deadline
from infra.object_store import ObjectNotFound
from infra.pg_tools import PgToolError, pg_dump, pg_restore
from schemas.commands import (
    BackupCommand,
    BackupDatabase,
    StoredBackupCommand,
    encryption_context,
)
from schemas.envelope import Envelope

READ_SIZE = 1024 * 1024
UPLOAD_CRASH_AFTER = 9 * 1024 * 1024
"""The ``backup.uploading`` crash point fires past this many bytes: a first S3 part is stored."""


class StoredDump(StepOutput):
    object_key: str
    size_bytes: int
    dump_bytes: int
    sha256: str
    key_id: str
    duration_ms: int


class DrillResult(StepOutput):
    duration_ms: int
    tables: int


class BackupObject:
    """A backup's object in the store, which a deletion (or an undone backup) removes."""

    def __init__(self, host: Host, cmd: BackupCommand) -> None:
        self.host = host
        self.cmd = cmd

    async def delete_object(self) -> None:
        await self.host.store.abort_incomplete(self.cmd.object_key)
        await self.host.store.delete(self.cmd.object_key)


class NewBackup(BackupObject):
    """``pg_dump`` of the live database, encrypted as it streams into the object store."""

    cmd: BackupDatabase

    def __init__(self, host: Host, cmd: BackupDatabase, envelope: Envelope) -> None:
        super().__init__(host, cmd)
        self.cmd = cmd
        self.context = encryption_context(envelope.project_id, cmd.database_id, cmd.backup_id)

    async def dump_and_upload(self) -> StoredDump:
        cmd, started = self.cmd, time.monotonic()
        hasher, dumped = hashlib.sha256(), 0

        async def upload() -> int:
            async with pg_dump(self.host.admin_dsn, cmd.dbname, compression=self.host.dump_compression) as dump:

                async def plaintext() -> AsyncIterator[bytes]:
                    nonlocal dumped
                    async for piece in dump:
                        dumped += len(piece)
                        if dumped > cmd.max_bytes:
                            raise PermanentError(f"the backup exceeds the plan limit of {_size(cmd.max_bytes)}")
                        yield piece

                async def ciphertext() -> AsyncIterator[bytes]:
                    handed = 0
                    async for piece in encrypt_stream(plaintext(), keys=self.host.backup_keys, context=self.context):
                        hasher.update(piece)
                        yield piece
                        handed += len(piece)
                        if handed > UPLOAD_CRASH_AFTER:
                            self.host.faults.crash_point(f"{cmd.KIND.value}.uploading")

                await self.host.store.abort_incomplete(cmd.object_key)  # left by a crashed attempt
                return await self.host.store.put(cmd.object_key, ciphertext())

        size = await within_deadline(self.host.deadline_seconds, "the backup", upload())  # pg_dump errors are retried
        return StoredDump(
            object_key=cmd.object_key,
            size_bytes=size,
            dump_bytes=dumped,
            sha256=hasher.hexdigest(),
            key_id=self.host.backup_keys.current,
            duration_ms=round((time.monotonic() - started) * 1000),
        )


class StoredBackup:
    """A completed backup, downloaded and checked, then restored into a scratch database."""

    def __init__(self, host: Host, cmd: StoredBackupCommand, envelope: Envelope) -> None:
        self.host = host
        self.cmd = cmd
        self.swap = Swap(host, cmd, envelope)
        self.download = self.swap.work_dir / "backup.enc"
        self.context = encryption_context(envelope.project_id, cmd.source_database_id, cmd.backup_id)

    async def _read_download(self) -> AsyncIterator[bytes]:
        with self.download.open("rb") as file:
            while piece := await asyncio.to_thread(file.read, READ_SIZE):
                yield piece

    async def download_and_check(self) -> None:
        """Fetch the object and prove it is intact and this backup's before anything changes."""
        try:
            await within_deadline(self.host.deadline_seconds, "the download", self._download_and_check())
        except BaseException:
            await self.swap.remove_work_dir()  # a refused download leaves nothing behind either
            raise

    async def _download_and_check(self) -> None:
        await asyncio.to_thread(self.swap.work_dir.mkdir, parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        try:
            with self.download.open("wb") as file:
                async for piece in self.host.store.get(self.cmd.object_key):
                    hasher.update(piece)
                    await asyncio.to_thread(file.write, piece)
        except ObjectNotFound:
            raise PermanentError("the backup's object is missing from the object store") from None
        if hasher.hexdigest() != self.cmd.sha256:
            raise PermanentError(
                "the stored backup failed its checksum (it is damaged or not this backup's object):"
                f" sha256 {hasher.hexdigest()}, expected {self.cmd.sha256}"
            )
        try:
            async for _ in decrypt_stream(self._read_download(), keys=self.host.backup_keys, context=self.context):
                pass
        except BackupIntegrityError as exc:
            raise PermanentError("the stored backup failed authentication", detail=exc) from None

    async def _plaintext(self) -> AsyncIterator[bytes]:
        fed = 0
        async for piece in decrypt_stream(self._read_download(), keys=self.host.backup_keys, context=self.context):
            yield piece
            fed += 1
            if fed == 2:
                self.host.faults.crash_point(f"{self.cmd.KIND.value}.restoring")

    async def restore_scratch(self) -> None:
        """The backup, restored into a fresh scratch database owned by the tenant's role."""
        await self._restore_into_scratch(self.cmd.role)

    async def _restore_into_scratch(self, owner: str | None) -> None:
        """Into a fresh scratch database (again from zero on a retry); nothing half-restored stays."""
        await self.swap.create_scratch(owner)
        restore = pg_restore(self.host.admin_dsn, self.swap.scratch, self._plaintext(), role=owner)
        try:
            await within_deadline(self.host.deadline_seconds, "the restore", restore)
        except PgToolError as exc:
            await self.swap.drop_scratch()
            raise PermanentError("the backup does not restore", detail=exc) from exc
        except BaseException:
            await self.swap.drop_scratch()  # nothing half-restored stays behind
            raise

    async def drill(self) -> DrillResult:
        """Download, check, restore into scratch, count what came back, drop it: the whole drill."""
        started = time.monotonic()
        try:
            await self.download_and_check()
            await self._restore_into_scratch(owner=None)
            tables = await self._count_tables()
        finally:
            await self.undo_drill()
        return DrillResult(duration_ms=round((time.monotonic() - started) * 1000), tables=tables)

    async def _count_tables(self) -> int:
        conninfo = make_conninfo(self.host.admin_dsn, dbname=self.swap.scratch)
        async with await psycopg.AsyncConnection.connect(conninfo, connect_timeout=10) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%'"
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    async def undo_drill(self) -> None:
        await self.swap.drop_scratch()
        await self.swap.remove_work_dir()


def _size(count: int) -> str:
    gib = count / 2**30
    return f"{gib:g} GiB" if gib >= 1 else f"{count} bytes"
