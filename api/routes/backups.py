"""Backups: take, list, read, delete, download, restore (in place or into a new database),
verify with a restore drill, and the per-database backup policy."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import (
    Accepted,
    BackupAccepted,
    BackupPolicyPublic,
    BackupPolicyUpdate,
    BackupPublic,
    BackupsPublic,
    RestoreRequest,
)
from api.usecases import backups
from api.usecases.loading import backup_public, load_backup

router = APIRouter(tags=["backups"], responses=errors(401, 403, 422, 429))


@router.post(
    "/databases/{database_id}/backups",
    status_code=202,
    response_model=BackupAccepted,
    responses=errors(413, 415, 404, 409),
)
async def create_backup(
    *, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID
) -> BackupAccepted:
    """Back the database up (pg_dump, encrypted, to the object store); 202 with the operation."""
    return await mutation.run(
        lambda conn: backups.back_up(conn, mutation.platform, principal, database_id), BackupAccepted
    )


@router.get("/databases/{database_id}/backups", response_model=BackupsPublic, responses=errors(404))
async def read_backups(*, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID) -> BackupsPublic:
    """A database's backups, newest first (deleted ones left out)."""
    async with platform.autocommit.connect() as conn:
        return await backups.list_backups(conn, principal, database_id)


@router.get("/backups/{backup_id}", response_model=BackupPublic, responses=errors(404))
async def read_backup(*, platform: PlatformDep, principal: CurrentPrincipal, backup_id: uuid.UUID) -> BackupPublic:
    """Status, size, checksum and last verified restore of one backup."""
    async with platform.autocommit.connect() as conn:
        return backup_public(await load_backup(conn, backup_id, principal))


@router.delete(
    "/backups/{backup_id}", status_code=202, response_model=BackupAccepted, responses=errors(413, 415, 404, 409)
)
async def delete_backup(*, principal: CurrentPrincipal, mutation: MutationDep, backup_id: uuid.UUID) -> BackupAccepted:
    """Delete a backup's stored object; 202 with the operation."""
    return await mutation.run(
        lambda conn: backups.delete_backup(conn, mutation.platform, principal, backup_id), BackupAccepted
    )


@router.post(
    "/backups/{backup_id}/restore", status_code=202, response_model=Accepted, responses=errors(413, 415, 404, 409, 503)
)
async def restore_backup(
    *, principal: CurrentPrincipal, mutation: MutationDep, backup_id: uuid.UUID, body: RestoreRequest
) -> Accepted:
    """Restore a backup over its database (``in_place``) or into a new database of the same project."""
    return await mutation.run(
        lambda conn: backups.restore_backup(conn, mutation.platform, principal, backup_id, body), Accepted
    )


@router.post(
    "/backups/{backup_id}/verify", status_code=202, response_model=BackupAccepted, responses=errors(413, 415, 404, 409)
)
async def verify_backup(*, principal: CurrentPrincipal, mutation: MutationDep, backup_id: uuid.UUID) -> BackupAccepted:
    """Restore drill: restore into a scratch database, check it, drop it; records the time it took."""
    return await mutation.run(
        lambda conn: backups.verify_backup(conn, mutation.platform, principal, backup_id), BackupAccepted
    )


DUMP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
}


@router.get("/backups/{backup_id}/download", response_class=StreamingResponse, responses=DUMP | errors(404, 409, 503))
async def download_backup(
    *, platform: PlatformDep, principal: CurrentPrincipal, backup_id: uuid.UUID
) -> StreamingResponse:
    """The backup as a ``pg_restore``-able custom-format dump, decrypted as it streams (owner only).

    Every chunk is authenticated before it is sent; a damaged object ends the transfer early
    instead of sending altered bytes.
    """
    download = await backups.download_backup(platform, principal, backup_id)
    return StreamingResponse(
        download.chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{download.filename}"'},
    )


@router.put(
    "/databases/{database_id}/backup-policy", response_model=BackupPolicyPublic, responses=errors(413, 415, 404)
)
async def update_backup_policy(
    *, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID, body: BackupPolicyUpdate
) -> BackupPolicyPublic:
    """Set when the database is backed up and how long its backups are kept."""
    return await mutation.run(
        lambda conn: backups.set_backup_policy(conn, mutation.platform, principal, database_id, body),
        BackupPolicyPublic,
    )


@router.get("/databases/{database_id}/backup-policy", response_model=BackupPolicyPublic, responses=errors(404))
async def read_backup_policy(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> BackupPolicyPublic:
    """The database's backup policy (404 when none was set)."""
    async with platform.autocommit.connect() as conn:
        return await backups.read_backup_policy(conn, principal, database_id)
