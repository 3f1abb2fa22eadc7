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
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from consumers.agent.ledger import BaseBackup, Ledger
from consumers.agent.wal_archiver import Publish, host_event
from infra.backup_crypto import BackupKeys, encrypt_stream
from infra.host_postgres import HostPostgres
from infra.object_store import ObjectStore
from infra.pg_tools import pg_basebackup
from infra.wal import base_context, base_object_key, wal_object_key
from schemas.events import BaseBackupCompleted, BaseBackupDeleted

log = logging.getLogger("pgplane.base_backup")


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
        when streaming): from the segment in use before it starts to the one sealed after it ends."""
        base_id, started = uuid.uuid4(), datetime.now(UTC)
        oids = await self.postgres.database_oids()  # a database made meanwhile is unknown: always unpacked
        start_segment = await self.postgres.current_wal_segment()
        key = base_object_key(self.host_id, base_id)
        hasher = hashlib.sha256()
        async with pg_basebackup(self.admin_dsn) as tar:

            async def ciphertext() -> AsyncIterator[bytes]:
                async for piece in encrypt_stream(tar, keys=self.keys, context=base_context(self.host_id, base_id)):
                    hasher.update(piece)
                    yield piece

            size = await self.store.put(key, ciphertext())
        base = BaseBackup(
            id=base_id,
            object_key=key,
            sha256=hasher.hexdigest(),
            size_bytes=size,
            start_segment=start_segment,
            stop_segment=await self.postgres.seal_wal(),
            started_at=started,
            finished_at=datetime.now(UTC),
            database_oids=oids,
        )
        await self.ledger.record_base_backup(base)
        completed = BaseBackupCompleted(
            host_id=self.host_id,
            base_backup_id=base.id,
            start_segment=base.start_segment,
            stop_segment=base.stop_segment,
            started_at=base.started_at,
            finished_at=base.finished_at,
            size_bytes=base.size_bytes,
        )
        await self.publish(host_event(completed, host_id=self.host_id, key=f"base:{base.id}"))
        log.info("base backup %s: %d bytes, WAL from %s", base.id, size, base.start_segment)
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
            await self.store.delete(base.object_key)
            await self.ledger.delete_base_backup(base.id)
            deleted = BaseBackupDeleted(host_id=self.host_id, base_backup_id=base.id, wal_kept_from=keep_from)
            await self.publish(host_event(deleted, host_id=self.host_id, key=f"base-deleted:{base.id}"))
