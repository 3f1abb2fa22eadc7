"""Base backups of the whole data host (``pg_basebackup``) on a schedule, and retention that
keeps exactly what the longest restore window needs: every base backup newer than the window,
the newest one older than it (where a restore at the window's start begins), and the WAL from
that one's start on. Everything older is deleted and said so in an event."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta

from consumers.agent.ledger import BaseBackup, Ledger, StoredPart
from consumers.agent.wal_archiver import Publish, host_event
from infra.backup_crypto import BackupKeys, encrypt_stream
from infra.host_postgres import HostPostgres
from infra.object_store import ObjectStore
from infra.pg_tools import pg_basebackup
from infra.tar_split import TRAILER, split
from infra.wal import base_context, base_object_key, base_part_context, base_part_key, wal_object_key
from schemas.events import BaseBackupCompleted, BaseBackupDeleted

log = logging.getLogger("pgplane.base_backup")
FIRST_NORMAL_OID = 16384
"""Databases below it (template1, template0, postgres) are small: they stay with the rest."""
REST = "rest"
GZIP_WBITS = 31
UPLOAD_QUEUE = 8
UPLOAD_PIECE = 256 * 1024


class BaseBackups:
    def __init__(
        self,
        *,
        host_id: str,
        admin_dsn: str,
        postgres: HostPostgres,
        store: ObjectStore,
        keys: BackupKeys,
        ledger: Ledger,
        publish: Publish,
        interval_seconds: float,
        retention_days: int,
        compression_level: int | None = None,
    ) -> None:
        self.host_id = host_id
        self.admin_dsn = admin_dsn
        self.postgres = postgres
        self.store = store
        self.keys = keys
        self.ledger = ledger
        self.publish = publish
        self.interval = timedelta(seconds=interval_seconds)
        self.retention = timedelta(days=retention_days)
        self.compression_level = -1 if compression_level is None else compression_level

    async def run(self, stop: asyncio.Event, *, poll: float = 5.0) -> None:
        await self.store.abort_incomplete(f"base/{self.host_id}/")  # left by a crash mid-upload
        while not stop.is_set():
            try:
                bases = await self.ledger.base_backups()
                if not bases or datetime.now(UTC) - bases[-1].finished_at > self.interval:
                    await self.take()
                await self.retain(datetime.now(UTC))
            except Exception:
                log.exception("base backup pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    async def take(self) -> BaseBackup:
        """A base backup; its WAL range is bracketed from outside (pg_basebackup does not print it
        when streaming): from the segment in use before it starts to the one sealed after it ends.

        Each user database's directory is stored as an object of its own (``parts``), everything
        else in ``object_key``: a restore of one database fetches the rest and its own part."""
        base_id, started = uuid.uuid4(), datetime.now(UTC)
        oids = await self.postgres.database_oids()  # a database made meanwhile is unknown: kept in the rest
        start_segment = await self.postgres.current_wal_segment()
        separate = {str(oid) for oid in oids.values() if oid >= FIRST_NORMAL_OID}
        uploads: dict[str, _Upload] = {}
        done: set[str] = set()

        def start(part: str) -> _Upload:
            if part == REST:
                key, context = base_object_key(self.host_id, base_id), base_context(self.host_id, base_id)
            else:
                key = base_part_key(self.host_id, base_id, part)
                context = base_part_context(self.host_id, base_id, part)
            upload = uploads[part] = _Upload(self.store, key, self.keys, context, self.compression_level)
            return upload

        def part_of(name: str) -> str:
            pieces = name.split("/")
            if len(pieces) > 1 and pieces[0] == "base" and pieces[1] in separate and pieces[1] not in done:
                return pieces[1]
            return REST  # a directory seen again after its part was closed (never, from pg_basebackup) too

        try:
            start(REST)
            current: str | None = None
            async with pg_basebackup(self.admin_dsn) as tar:
                async for part, piece in split(tar, part_of):
                    if part != REST and part != current:
                        if current is not None:
                            await uploads[current].finish()
                            done.add(current)
                        current = part
                        start(part)
                    await uploads[part].write(piece)
            for upload in uploads.values():
                await upload.finish()
        except BaseException:
            for upload in uploads.values():
                upload.abandon()
            raise
        rest = uploads.pop(REST)
        base = BaseBackup(
            id=base_id,
            object_key=rest.key,
            sha256=rest.hasher.hexdigest(),
            size_bytes=rest.size,
            start_segment=start_segment,
            stop_segment=await self.postgres.seal_wal(),
            started_at=started,
            finished_at=datetime.now(UTC),
            database_oids=oids,
            parts={
                oid: StoredPart(object_key=u.key, sha256=u.hasher.hexdigest(), size_bytes=u.size)
                for oid, u in uploads.items()
            },
        )
        await self.ledger.record_base_backup(base)
        completed = BaseBackupCompleted(
            host_id=self.host_id,
            base_backup_id=base.id,
            start_segment=base.start_segment,
            stop_segment=base.stop_segment,
            started_at=base.started_at,
            finished_at=base.finished_at,
            size_bytes=base.total_bytes,
        )
        await self.publish(host_event(completed, host_id=self.host_id, key=f"base:{base.id}"))
        log.info(
            "base backup %s: %d bytes in %d parts, WAL from %s",
            base.id,
            base.total_bytes,
            1 + len(base.parts or {}),
            base.start_segment,
        )
        return base

    async def retain(self, now: datetime) -> None:
        bases = await self.ledger.base_backups()
        old = [b for b in bases if b.finished_at < now - self.retention]
        expired = old[:-1]  # the newest old one is where a restore at the window's start begins
        if not expired:
            return
        keep_from = bases[len(expired)].start_segment
        for segment in await self.ledger.segments_from(""):
            if segment.segment >= keep_from:
                break
            await self.store.delete(wal_object_key(self.host_id, segment.segment))
        await self.ledger.forget_segments_before(keep_from)
        for base in expired:
            for part in (base.parts or {}).values():
                await self.store.delete(part["object_key"])
            await self.store.delete(base.object_key)
            await self.ledger.delete_base_backup(base.id)
            deleted = BaseBackupDeleted(host_id=self.host_id, base_backup_id=base.id, wal_kept_from=keep_from)
            await self.publish(host_event(deleted, host_id=self.host_id, key=f"base-deleted:{base.id}"))


async def gzipped(chunks: AsyncIterable[bytes], level: int) -> AsyncIterator[bytes]:
    """The stream as gzip, compressed off the event loop."""
    packer = zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)
    async for piece in chunks:
        if packed := await asyncio.to_thread(packer.compress, piece):
            yield packed
    yield packer.flush()


class _Upload:
    """One part of a base backup on its way into the store: tar bytes in, gzipped, sealed, and
    hashed as they are written; ``finish`` closes the tar and waits for the object."""

    def __init__(self, store: ObjectStore, key: str, keys: BackupKeys, context: str, level: int) -> None:
        self.key = key
        self.hasher = hashlib.sha256()
        self.size = 0
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=UPLOAD_QUEUE)
        self._buffer = bytearray()
        self._task = asyncio.create_task(store.put(key, self._ciphertext(keys, context, level)))

    async def _plain(self) -> AsyncIterator[bytes]:
        while (piece := await self._queue.get()) is not None:
            yield piece

    async def _ciphertext(self, keys: BackupKeys, context: str, level: int) -> AsyncIterator[bytes]:
        async for piece in encrypt_stream(gzipped(self._plain(), level), keys=keys, context=context):
            self.hasher.update(piece)
            yield piece

    async def write(self, piece: bytes) -> None:
        self._buffer += piece
        if len(self._buffer) >= UPLOAD_PIECE:
            await self._put(bytes(self._buffer))
            self._buffer.clear()

    async def _put(self, piece: bytes | None) -> None:
        """Queue ``piece``, or raise the upload's failure instead of waiting on it forever."""
        put = asyncio.ensure_future(self._queue.put(piece))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await self._task
            raise RuntimeError(f"the upload of {self.key} ended before its data")

    async def finish(self) -> None:
        await self._put(bytes(self._buffer) + TRAILER)
        self._buffer.clear()
        await self._put(None)
        self.size = await self._task

    def abandon(self) -> None:
        self._task.cancel()  # a partial upload is aborted by the store, or at the next start
