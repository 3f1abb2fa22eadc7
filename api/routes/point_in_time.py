"""Point-in-time restore: the restore window of a database, and the restore itself."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import Accepted, PointInTimeRestoreRequest, RestoreWindowPublic
from api.usecases import point_in_time

router = APIRouter(prefix="/databases", tags=["point-in-time restore"], responses=errors(401, 403, 422, 429))


@router.get("/{database_id}/restore-window", response_model=RestoreWindowPublic, responses=errors(404))
async def read_restore_window(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> RestoreWindowPublic:
    """The earliest and latest moment the database can be restored to, and how archiving is doing."""
    async with platform.autocommit.connect() as conn:
        return await point_in_time.read_restore_window(conn, platform, principal, database_id)


@router.post(
    "/{database_id}/restore", status_code=202, response_model=Accepted, responses=errors(413, 415, 404, 409, 503)
)
async def restore_point_in_time(
    *, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID, body: PointInTimeRestoreRequest
) -> Accepted:
    """Bring the database (in place) or a new copy of it back to how it was at ``point_in_time``."""
    return await mutation.run(
        lambda conn: point_in_time.restore_point_in_time(conn, mutation.platform, principal, database_id, body),
        Accepted,
    )
