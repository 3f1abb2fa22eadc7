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

from consumers.agent.sagas import Host, Outputs, Step
from consumers.agent.swap import Swap
from infra.backup_crypto import BackupIntegrityError, decrypt_stream, encrypt_stream
from infra.errors import PermanentError, within_deadline
from infra.object_store import ObjectNotFound
from infra.pg_tools import PgToolError, pg_dump, pg_restore
from schemas.commands import (
    BackupCommand,
    BackupDatabase,
    DeleteBackup,
    RestoreBackup,
    RestoreBackupToNewDatabase,
    StoredBackupCommand,
    VerifyBackup,
    encryption_context,
)
from schemas.envelope import Envelope

READ_SIZE = 1024 * 1024
UPLOAD_CRASH_AFTER = 9 * 1024 * 1024
"""The ``backup.uploading`` crash point fires past this many bytes: a first S3 part is stored."""


class _Saga:
    """What every backup saga needs: the host, the command and its envelope."""

    def __init__(self, host: Host, cmd: BackupCommand, envelope: Envelope) -> None:
        self.host = host
        self.cmd = cmd
        self.swap = Swap(host, cmd, envelope)
        self.download = self.swap.work_dir / "backup.enc"
        source = cmd.source_database_id if isinstance(cmd, StoredBackupCommand) else cmd.database_id
        self.context = encryption_context(envelope.project_id, source, cmd.backup_id)

    def crash_point(self, name: str) -> None:
        self.host.faults.crash_point(f"{self.cmd.KIND.value}.{name}")

    # --- backup -------------------------------------------------------------------------

    async def dump_and_upload(self) -> Outputs:
        assert isinstance(self.cmd, BackupDatabase)
        cmd, started = self.cmd, time.monotonic()
        hasher, dumped = hashlib.sha256(), 0

        async def upload() -> int:
            async with pg_dump(self.host.admin_dsn, cmd.dbname) as dump:

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
                            self.crash_point("uploading")

                await self.host.store.abort_incomplete(cmd.object_key)  # left by a crashed attempt
                return await self.host.store.put(cmd.object_key, ciphertext())

        size = await within_deadline(self.host.deadline_seconds, "the backup", upload())  # pg_dump errors are retried
        return {
            "object_key": cmd.object_key,
            "size_bytes": size,
            "dump_bytes": dumped,
            "sha256": hasher.hexdigest(),
            "key_id": self.host.backup_keys.current,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }

    async def delete_object(self) -> None:
        await self.host.store.abort_incomplete(self.cmd.object_key)
        await self.host.store.delete(self.cmd.object_key)

    # --- restore ------------------------------------------------------------------------

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
        assert isinstance(self.cmd, StoredBackupCommand)
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
            raise PermanentError(f"the stored backup failed authentication: {exc}") from None

    async def _plaintext(self) -> AsyncIterator[bytes]:
        fed = 0
        async for piece in decrypt_stream(self._read_download(), keys=self.host.backup_keys, context=self.context):
            yield piece
            fed += 1
            if fed == 2:
                self.crash_point("restoring")

    async def restore_scratch(self, owner: str | None) -> None:
        """The backup, restored into a fresh scratch database (again from zero on a retry)."""
        await self.swap.create_scratch(owner)
        restore = pg_restore(self.host.admin_dsn, self.swap.scratch, self._plaintext(), role=owner)
        try:
            await within_deadline(self.host.deadline_seconds, "the restore", restore)
        except PgToolError as exc:
            await self.swap.drop_scratch()
            raise PermanentError(f"the backup does not restore: {exc}") from exc
        except BaseException:
            await self.swap.drop_scratch()  # nothing half-restored stays behind
            raise

    # --- drill --------------------------------------------------------------------------

    async def drill(self) -> Outputs:
        """Download, check, restore into scratch, count what came back, drop it: the whole drill."""
        started = time.monotonic()
        try:
            await self.download_and_check()
            await self.restore_scratch(owner=None)
            tables = await self._count_tables()
        finally:
            await self.undo_drill()
        return {"duration_ms": round((time.monotonic() - started) * 1000), "tables": tables}

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


def backup_steps(host: Host, cmd: BackupCommand, envelope: Envelope) -> list[Step]:
    saga = _Saga(host, cmd, envelope)
    swap = saga.swap
    match cmd:
        case BackupDatabase():
            return [Step("dump_uploaded", saga.dump_and_upload, saga.delete_object)]
        case RestoreBackup():
            return [
                Step("backup_downloaded", saga.download_and_check, swap.remove_work_dir),
                Step("scratch_restored", lambda: saga.restore_scratch(cmd.role), swap.drop_scratch),
                *swap.in_place(),
            ]
        case RestoreBackupToNewDatabase():
            return swap.new_database(
                cmd,
                [Step("backup_downloaded", saga.download_and_check, swap.remove_work_dir)],
                [Step("scratch_restored", lambda: saga.restore_scratch(cmd.role), swap.drop_scratch)],
            )
        case VerifyBackup():
            return [Step("restore_drilled", saga.drill, saga.undo_drill)]
        case DeleteBackup():
            return [Step("object_deleted", saga.delete_object)]
    raise PermanentError(f"no saga for {type(cmd).__name__}")
