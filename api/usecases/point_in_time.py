"""Point-in-time restore: a database's restore window, and a restore checked against it before
anything runs (a moment in the future, outside the window or not covered by archived WAL is a
422 that says why). A deleted database's window ends when it stopped taking writes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import Accepted, PointInTimeRestoreRequest, PointInTimeToNewDatabase, RestoreWindowPublic
from api.platform import Platform
from api.principal import Principal
from api.restore_window import Base, Span, choose, missing_after, reaching_now, spans
from api.usecases.databases import new_identity
from api.usecases.loading import check_created, load_database
from api.usecases.operations import accept_operation, ensure_idle
from infra.heartbeats import STALE_SECONDS
from infra.plans import entitlements
from readmodel.tables import BASE_BACKUPS, GONE, PROJECTS, WAL_SEGMENTS, project_plan
from schemas.commands import RestorePointInTime, RestorePointInTimeToNewDatabase

HEARTBEAT_READ_SECONDS = 2.0


class Window:
    """The moments a database can be restored to: its host's covered spans (up to now while the
    host is up), cut to the plan's retention, the database's lifetime and, once it is deleted,
    the end of its writes."""

    def __init__(
        self,
        found: list[Span],
        bases: list[Base],
        segments: dict[str, datetime],
        *,
        floor: datetime,
        ceiling: datetime | None,
        host_up: bool,
    ) -> None:
        self.spans = [s for s in found if s.end >= floor and (ceiling is None or s.start <= ceiling)]
        self.bases = bases
        self.segments = segments
        self.floor = floor
        self.ceiling = ceiling
        self.host_up = host_up

    @property
    def earliest(self) -> datetime | None:
        return max(min(s.start for s in self.spans), self.floor) if self.spans else None

    @property
    def latest(self) -> datetime | None:
        if not self.spans:
            return None
        latest = max(s.end for s in self.spans)
        return min(latest, self.ceiling) if self.ceiling else latest

    def check(self, moment: datetime) -> Span:
        """The span a restore to ``moment`` starts from, or a 422 that says why there is none."""
        if moment > datetime.now(UTC):
            raise _refused(f"{moment.isoformat()} is in the future")
        if self.ceiling is not None and moment > self.ceiling:
            raise _refused(
                f"the database was deleted: its restore window ends at {self.ceiling.isoformat()},"
                f" before {moment.isoformat()}"
            )
        if self.earliest is None or self.latest is None:
            raise _refused("there is no restore window yet: no base backup with its WAL has been archived")
        if moment < self.earliest:
            raise _refused(f"{moment.isoformat()} is before the restore window, which starts at {self.earliest}")
        span = choose(self.spans, moment)
        if span is None:
            missing = missing_after(self.bases, self.segments, moment)
            reason = (
                f"archived WAL ends at {self.latest}" if moment > self.latest else f"WAL segment {missing} is missing"
            )
            raise _refused(f"{moment.isoformat()} is not covered by archived WAL: {reason}")
        return span


def _refused(message: str) -> ApiError:
    return ApiError(422, "point_in_time_not_restorable", message)


async def window(conn: AsyncConnection, platform: Platform, database: Row[Any]) -> Window:
    plan = (await conn.execute(sa.select(project_plan()).where(PROJECTS.c.id == database.project_id))).scalar()
    bases = [
        Base(id=r.id, start_segment=r.start_segment, stop_segment=r.stop_segment, finished_at=r.finished_at)
        for r in await conn.execute(
            sa.select(BASE_BACKUPS).where(BASE_BACKUPS.c.host_id == database.host_id, BASE_BACKUPS.c.deleted.is_(False))
        )
    ]
    segments = {
        r.segment: r.archived_at
        for r in await conn.execute(
            sa.select(WAL_SEGMENTS.c.segment, WAL_SEGMENTS.c.archived_at).where(
                WAL_SEGMENTS.c.host_id == database.host_id
            )
        )
    }
    now = datetime.now(UTC)
    retention = now - timedelta(days=entitlements(platform.settings, str(plan)).pitr_window_days)
    up = await _host_up(platform, database.host_id, now) and _archiving(platform, segments, now)
    found = spans(bases, segments)
    return Window(
        reaching_now(found, segments, now) if up else found,
        bases,
        segments,
        floor=max(retention, database.created_at),
        ceiling=database.deleted_at,
        host_up=up,
    )


def _archiving(platform: Platform, segments: dict[str, datetime], now: datetime) -> bool:
    """The host's archive moved lately: a seal now would reach it (a stuck archiver would not)."""
    newest = max(segments.values(), default=None)
    return newest is not None and (now - newest).total_seconds() <= platform.settings.wal_lag_alert_seconds


async def _host_up(platform: Platform, host_id: str, now: datetime) -> bool:
    """The host's agent sent a heartbeat lately (a bus that does not answer says: not known up)."""
    try:
        async with asyncio.timeout(HEARTBEAT_READ_SECONDS):
            last = await platform.heartbeats.last(f"agent.{host_id}")
    except (TimeoutError, nats.errors.Error):
        return False
    return last is not None and (now - last).total_seconds() <= STALE_SECONDS


async def read_restore_window(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> RestoreWindowPublic:
    database = await load_database(conn, database_id, principal)
    found = await window(conn, platform, database)
    last = max(found.segments.items(), key=lambda item: item[0], default=None)
    return RestoreWindowPublic(
        database_id=database_id,
        earliest=found.earliest,
        latest=found.latest,
        last_archived_segment=last[0] if last else None,
        last_archived_at=last[1] if last else None,
        archive_lag_seconds=round((datetime.now(UTC) - last[1]).total_seconds()) if last else None,
        base_backups=len(found.bases),
        host_up=found.host_up,
    )


async def restore_point_in_time(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    database_id: uuid.UUID,
    request: PointInTimeRestoreRequest,
) -> Accepted:
    """The database as it was at ``point_in_time``, in place or as a new database."""
    source = await load_database(conn, database_id, principal, for_update=True)
    span = (await window(conn, platform, source)).check(request.point_in_time)
    fields: dict[str, Any] = {
        "point_in_time": request.point_in_time,
        "base_backup_id": span.base_backup_id,
        "source_database_id": source.id,
        "source_dbname": source.dbname,
    }
    command: RestorePointInTime | RestorePointInTimeToNewDatabase
    if isinstance(request, PointInTimeToNewDatabase):
        identity = await new_identity(platform, conn, source.project_id, request.name, host_id=source.host_id)
        command = RestorePointInTimeToNewDatabase(**fields | identity.fields())
        name, version = request.name, 1
    else:
        if source.status in GONE:
            raise not_found("database")
        check_created(source)
        await ensure_idle(conn, source.id)
        command = RestorePointInTime(database_id=source.id, dbname=source.dbname, role=source.role, **fields)
        name, version = source.name, source.credentials_version
    return await accept_operation(
        conn,
        platform,
        principal,
        command,
        name=name,
        project_id=source.project_id,
        credentials_version=version,
        host_id=source.host_id,
        point_in_time=request.point_in_time,
    )
