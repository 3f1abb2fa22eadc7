"""WAL archiving and base-backup retention against small fakes: what gets uploaded, reported,
kept and deleted."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from consumers.agent.base_backups import BaseBackups
from consumers.agent.ledger import ArchivedSegment, BaseBackup, Ledger
from consumers.agent.wal_archiver import WalArchiver
from infra.backup_crypto import BackupKeys, new_backup_key_spec
from infra.object_store import ObjectStore
from infra.object_store.filesystem import FilesystemStore
from schemas.envelope import Envelope

NOW = datetime(2026, 6, 1, tzinfo=UTC)


class FakeLedger:
    def __init__(self) -> None:
        self.segments: dict[str, ArchivedSegment] = {}
        self.bases: list[BaseBackup] = []

    async def record_segment(self, segment: str, *, size_bytes: int, sha256: str, archived_at: datetime) -> None:
        self.segments[segment] = ArchivedSegment(
            segment=segment, size_bytes=size_bytes, sha256=sha256, archived_at=archived_at
        )

    async def segments_from(self, first: str) -> list[ArchivedSegment]:
        return [s for name, s in sorted(self.segments.items()) if name >= first]

    async def forget_segments_before(self, segment: str) -> None:
        self.segments = {k: v for k, v in self.segments.items() if k >= segment}

    async def base_backups(self) -> list[BaseBackup]:
        return sorted(self.bases, key=lambda b: b.finished_at)

    async def delete_base_backup(self, base_id: uuid.UUID) -> None:
        self.bases = [b for b in self.bases if b.id != base_id]


class BrokenStore(FilesystemStore):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        raise ConnectionError("object store unreachable")


def segment(n: int) -> str:
    return f"{1:08X}{0:08X}{n:08X}"


def archiver(spool: Path, store: ObjectStore, ledger: FakeLedger, events: list[Envelope]) -> WalArchiver:
    async def publish(envelope: Envelope) -> None:
        events.append(envelope)

    return WalArchiver(
        spool=spool,
        host_id="host-1",
        store=store,
        keys=BackupKeys.parse(new_backup_key_spec()),
        ledger=cast(Ledger, ledger),
        publish=publish,
        lag_alert_seconds=60,
    )


async def test_segments_are_uploaded_in_order_and_failures_reported_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for n in (3, 4):
        (spool / segment(n)).write_bytes(bytes(16 * 1024 * 1024))
        old = time.time() - 120  # waiting longer than the alert threshold
        os.utime(spool / segment(n), (old, old))
    (spool / f"{segment(3)}.00000028.backup").write_text("label")
    ledger, events = FakeLedger(), list[Envelope]()
    broken = archiver(spool, BrokenStore(tmp_path / "broken"), ledger, events)
    await broken.archive_pending()
    await broken.archive_pending()
    assert [e.type for e in events] == ["pgplane.wal.archive_lagging", "pgplane.wal.archive_failed"]
    assert events[1].data["segment"] == segment(3) and "unreachable" in events[1].data["reason"]
    assert sorted(p.name for p in spool.iterdir()) == [segment(3), segment(4)]  # kept until uploaded

    store = FilesystemStore(tmp_path / "store")
    events.clear()
    await archiver(spool, store, ledger, events).archive_pending()
    assert [e.data["segment"] for e in events if e.type == "pgplane.wal.segment_archived"] == [segment(3), segment(4)]
    assert list(spool.iterdir()) == []
    assert sorted(ledger.segments) == [segment(3), segment(4)]
    assert ledger.segments[segment(3)].size_bytes < 100_000  # a switched segment compresses to almost nothing
    assert await store.keys("wal/host-1/") == [f"wal/host-1/{segment(n)}.zz.enc" for n in (3, 4)]


async def test_retention_keeps_what_the_window_needs(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    ledger = FakeLedger()
    ages = [40, 35, 20, 1]  # days; the window is 30
    for i, age in enumerate(ages):
        finished = NOW - timedelta(days=age)
        base = BaseBackup(
            id=uuid.uuid4(),
            object_key=f"base/host-1/{i}.tar.gz.enc",
            sha256="0" * 64,
            size_bytes=1,
            start_segment=segment(10 * i),
            stop_segment=segment(10 * i + 1),
            started_at=finished,
            finished_at=finished,
        )
        ledger.bases.append(base)
        await store.put(base.object_key, _one(b"base"))
    for n in range(0, 35):
        await ledger.record_segment(segment(n), size_bytes=1, sha256="0" * 64, archived_at=NOW)
        await store.put(f"wal/host-1/{segment(n)}.zz.enc", _one(b"wal"))
    events: list[Envelope] = []

    async def publish(envelope: Envelope) -> None:
        events.append(envelope)

    bases = BaseBackups(
        host_id="host-1",
        admin_dsn="",
        postgres=None,  # type: ignore[arg-type]
        store=store,
        keys=BackupKeys.parse(new_backup_key_spec()),
        ledger=cast(Ledger, ledger),
        publish=publish,
        interval_seconds=86400,
        retention_days=30,
    )
    await bases.retain(NOW)
    assert [b.object_key for b in await ledger.base_backups()] == [f"base/host-1/{i}.tar.gz.enc" for i in (1, 2, 3)]
    assert min(ledger.segments) == segment(10)  # the 35-day-old base still starts the 30-day window
    assert (await store.keys("wal/"))[0] == f"wal/host-1/{segment(10)}.zz.enc"
    assert await store.keys("base/") == [f"base/host-1/{i}.tar.gz.enc" for i in (1, 2, 3)]
    assert [e.data["wal_kept_from"] for e in events] == [segment(10)]


async def _one(data: bytes) -> AsyncIterable[bytes]:
    yield data
