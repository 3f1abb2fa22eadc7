"""Continuous WAL archiving: PostgreSQL's ``basic_archive`` puts each finished segment into the
spool directory (fsynced, atomically renamed), and this loop uploads it, compressed and
encrypted, to the object store, records it in the ledger, says so in an event, and only then
removes it from the spool.

Why ``archive_library`` into a spool rather than ``pg_receivewal``: PostgreSQL itself keeps a
segment until it is archived (no replication slot to babysit, no gap when our process is down),
the hand-off is durable before PostgreSQL recycles the segment, and everything slow or remote
(compression, encryption, the object store) happens in our process, where failures are retried
and reported as ``wal.archive_failed`` / ``wal.archive_lagging`` events instead of stalling the
database's archiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from consumers.agent.ledger import Ledger
from infra.backup_crypto import BackupKeys, encrypt_stream
from infra.object_store import ObjectStore
from infra.wal import SEGMENT, wal_context, wal_object_key
from schemas.envelope import Envelope, Payload
from schemas.events import PLATFORM_PROJECT, WalArchiveFailed, WalArchiveLagging, WalSegmentArchived

log = logging.getLogger("pgplane.wal")
READ_SIZE = 1024 * 1024
Publish = Callable[[Envelope], Awaitable[None]]


def host_event(payload: Payload, *, host_id: str, key: str) -> Envelope:
    """A host event (no tenant); ``key`` makes its id deterministic so a re-publish is dropped."""
    return Envelope.wrap(
        payload,
        correlation_id=uuid.uuid5(uuid.NAMESPACE_URL, f"pgplane:{host_id}:{key}"),
        sequence=0,
        actor=f"agent:{host_id}",
        project_id=PLATFORM_PROJECT,
    )


async def compressed(path: Path) -> AsyncIterator[bytes]:
    """The file, zlib-compressed on the fly (a switched segment is mostly zeros)."""
    packer = zlib.compressobj(level=1)
    with path.open("rb") as file:
        while piece := await asyncio.to_thread(file.read, READ_SIZE):
            if out := packer.compress(piece):
                yield out
    yield packer.flush()


async def decompressed(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    unpacker = zlib.decompressobj()
    async for piece in pieces:
        if out := unpacker.decompress(piece):
            yield out
    if not unpacker.eof:
        raise ValueError("the compressed stream ends early")
    yield unpacker.flush()


class WalArchiver:
    def __init__(
        self,
        *,
        spool: Path,
        host_id: str,
        store: ObjectStore,
        keys: BackupKeys,
        ledger: Ledger,
        publish: Publish,
        lag_alert_seconds: float,
    ) -> None:
        self.spool = spool
        self.host_id = host_id
        self.store = store
        self.keys = keys
        self.ledger = ledger
        self.publish = publish
        self.lag_alert_seconds = lag_alert_seconds
        self._failing: set[str] = set()
        self._lagging = False

    async def run(self, stop: asyncio.Event, *, interval: float = 0.25) -> None:
        while not stop.is_set():
            try:
                await self.archive_pending()
            except Exception:
                log.exception("archiving pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def pending(self) -> list[Path]:
        """Spooled segments, oldest first. Backup labels and history files are dropped: the ledger has
        what we need (``archtemp*`` files are basic_archive's own copies in progress)."""
        segments = []
        for path in self.spool.iterdir():
            if SEGMENT.match(path.name):
                segments.append(path)
            elif not path.name.startswith("archtemp"):
                path.unlink(missing_ok=True)
        return sorted(segments)

    async def archive_pending(self) -> None:
        """Upload every spooled segment, oldest first; stop at the first failure (order matters)."""
        pending = await asyncio.to_thread(self.pending)
        await self._check_lag(pending)
        for path in pending:
            try:
                await self.archive(path)
            except Exception as exc:
                log.warning("archiving %s failed: %r", path.name, exc)
                if path.name not in self._failing:
                    self._failing.add(path.name)
                    reason = f"{type(exc).__name__}: {exc}"[:500]
                    failed = WalArchiveFailed(host_id=self.host_id, segment=path.name, reason=reason)
                    with contextlib.suppress(Exception):
                        await self.publish(host_event(failed, host_id=self.host_id, key=f"failed:{path.name}"))
                return
            self._failing.discard(path.name)

    async def archive(self, path: Path) -> None:
        segment = path.name
        archived_at = datetime.fromtimestamp((await asyncio.to_thread(path.stat)).st_mtime, UTC)
        hasher = hashlib.sha256()

        async def ciphertext() -> AsyncIterator[bytes]:
            context = wal_context(self.host_id, segment)
            async for piece in encrypt_stream(compressed(path), keys=self.keys, context=context):
                hasher.update(piece)
                yield piece

        size = await self.store.put(wal_object_key(self.host_id, segment), ciphertext())
        await self.ledger.record_segment(segment, size_bytes=size, sha256=hasher.hexdigest(), archived_at=archived_at)
        archived = WalSegmentArchived(host_id=self.host_id, segment=segment, size_bytes=size, archived_at=archived_at)
        await self.publish(host_event(archived, host_id=self.host_id, key=f"wal:{segment}"))
        await asyncio.to_thread(path.unlink)

    async def _check_lag(self, pending: list[Path]) -> None:
        oldest = time.time() - pending[0].stat().st_mtime if pending else 0.0
        lagging = oldest > self.lag_alert_seconds
        if lagging and not self._lagging:
            event = WalArchiveLagging(
                host_id=self.host_id, pending_segments=len(pending), oldest_pending_seconds=round(oldest)
            )
            await self.publish(host_event(event, host_id=self.host_id, key=f"lagging:{pending[0].name}"))
        self._lagging = lagging
