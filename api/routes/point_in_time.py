"""Point-in-time restore: the restore window of a database, and the restore itself, checked
before anything runs (a moment outside the window, in the future, or not covered by archived
WAL is a 422 that says why)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentPrincipal, IdempotencyKey, Platform, PlatformDep
from api.errors import ApiError, not_found
from api.models import Accepted, PointInTimeRestoreRequest, RestoreWindowPublic
from api.mutations import mutate
from api.restore_window import Base, Span, choose, missing_after, spans
from api.routes.databases import accept_operation, ensure_idle, load_database, new_database
from readmodel.tables import BASE_BACKUPS, GONE, PROJECTS, WAL_SEGMENTS
from schemas.commands import PointInTimeCommand, RestorePointInTime, RestorePointInTimeToNewDatabase

router = APIRouter(prefix="/databases", tags=["point-in-time restore"])


class _Window:
    def __init__(self, found: list[Span], bases: list[Base], segments: dict[str, datetime], floor: datetime) -> None:
        self.spans = [s for s in found if s.end >= floor]
        self.bases = bases
        self.segments = segments
        self.floor = floor

    @property
    def earliest(self) -> datetime | None:
        return max(min(s.start for s in self.spans), self.floor) if self.spans else None

    @property
    def latest(self) -> datetime | None:
        return max(s.end for s in self.spans) if self.spans else None

    def check(self, moment: datetime) -> Span:
        """The span a restore to ``moment`` starts from, or a 422 that says why there is none."""
        now = datetime.now(UTC)
        if moment > now:
            raise _refused(f"{moment.isoformat()} is in the future")
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


async def _window(platform: Platform, conn: AsyncConnection, database: Row[Any]) -> _Window:
    plan = (await conn.execute(sa.select(PROJECTS.c.plan).where(PROJECTS.c.id == database.project_id))).scalar()
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
    retention = datetime.now(UTC) - timedelta(days=platform.settings.pitr_window_days(str(plan)))
    return _Window(spans(bases, segments), bases, segments, max(retention, database.created_at))


@router.get("/{database_id}/restore-window", response_model=RestoreWindowPublic)
async def read_restore_window(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> RestoreWindowPublic:
    """The earliest and latest moment the database can be restored to, and how archiving is doing."""
    async with platform.engine.connect() as conn:
        database = await load_database(conn, database_id, principal)
        window = await _window(platform, conn, database)
    last = max(window.segments.items(), key=lambda item: item[0], default=None)
    return RestoreWindowPublic(
        database_id=database_id,
        earliest=window.earliest,
        latest=window.latest,
        last_archived_segment=last[0] if last else None,
        last_archived_at=last[1] if last else None,
        archive_lag_seconds=round((datetime.now(UTC) - last[1]).total_seconds()) if last else None,
        base_backups=len(window.bases),
    )


@router.post("/{database_id}/restore", status_code=202, response_model=Accepted)
async def restore_point_in_time(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    database_id: uuid.UUID,
    body: PointInTimeRestoreRequest,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Bring the database (in place) or a new copy of it back to how it was at ``point_in_time``."""

    async def change(conn: AsyncConnection) -> Accepted:
        source = await load_database(conn, database_id, principal, for_update=True)
        span = (await _window(platform, conn, source)).check(body.point_in_time)
        fields: dict[str, Any] = {
            "point_in_time": body.point_in_time,
            "base_backup_id": span.base_backup_id,
            "source_database_id": source.id,
            "source_dbname": source.dbname,
        }
        command: PointInTimeCommand
        if body.target == "in_place":
            if source.status in GONE:
                raise not_found("database")
            await ensure_idle(conn, source.id)
            command = RestorePointInTime(database_id=source.id, dbname=source.dbname, role=source.role, **fields)
            name, version = source.name, source.credentials_version
        else:
            assert body.name is not None
            identity = await new_database(platform, conn, source.project_id, body.name)
            command = RestorePointInTimeToNewDatabase(**fields | identity)
            name, version = body.name, 1
        return await accept_operation(
            platform,
            conn,
            principal,
            command,
            name=name,
            project_id=source.project_id,
            credentials_version=version,
            host_id=source.host_id,
            point_in_time=body.point_in_time,
        )

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path=f"/databases/{database_id}/restore",
        body=body.model_dump(mode="json"),
        status_code=202,
        change=change,
    )
