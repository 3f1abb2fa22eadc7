"""Backups: take, list, read, delete, download, restore (in place or into a new database),
verify with a restore drill, and the per-database backup policy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentPrincipal, IdempotencyKey, PlatformDep, Principal
from api.errors import ApiError, not_found
from api.models import (
    Accepted,
    BackupAccepted,
    BackupPolicyPublic,
    BackupPolicyUpdate,
    BackupPublic,
    BackupsPublic,
    RestoreRequest,
)
from api.mutations import mutate
from api.routes.databases import accept_operation, ensure_idle, load_database, new_database
from api.routes.operations import load_operation
from infra.backup_crypto import BackupIntegrityError, decrypt_stream
from infra.object_store import ObjectNotFound
from producers.backup_schedule import check_schedule
from producers.backups import request_backup, request_backup_deletion
from producers.commands import project_event, record_event, request_operation
from readmodel.tables import BACKUPS, DATABASES, GONE, POLICIES, PROJECTS, BackupStatus, DatabaseStatus
from schemas.commands import (
    RestoreBackup,
    RestoreBackupToNewDatabase,
    StoredBackupCommand,
    VerifyBackup,
    encryption_context,
)
from schemas.events import BackupDownloaded, BackupPolicySet

router = APIRouter(tags=["backups"])


def to_backup_public(row: Row[Any]) -> BackupPublic:
    return BackupPublic.model_validate({k: v for k, v in row._mapping.items() if k in BackupPublic.model_fields})


async def load_backup(
    conn: AsyncConnection, backup_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Row[Any]:
    query = sa.select(BACKUPS).where(BACKUPS.c.id == backup_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None or row.status == BackupStatus.DELETED or not principal.sees(row.project_id):
        raise not_found("backup")
    return row


def _completed(backup: Row[Any]) -> None:
    if backup.status != BackupStatus.COMPLETED:
        raise ApiError(409, "backup_not_completed", f"the backup is {backup.status}, not completed")


def _available(database: Row[Any]) -> None:
    if database.status in GONE:
        raise not_found("database")
    if database.status == DatabaseStatus.CREATING:
        raise ApiError(409, "database_not_available", "the database is still being created")


async def _backup_accepted(conn: AsyncConnection, principal: Principal, operation_id: uuid.UUID) -> BackupAccepted:
    operation = await load_operation(conn, operation_id, principal)
    assert operation.backup_id is not None
    backup = (await conn.execute(sa.select(BACKUPS).where(BACKUPS.c.id == operation.backup_id))).one()
    return BackupAccepted(operation=operation, backup=to_backup_public(backup))


@router.post("/databases/{database_id}/backups", status_code=202, response_model=BackupAccepted)
async def create_backup(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    database_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Back the database up (pg_dump, encrypted, to the object store); 202 with the operation."""

    async def change(conn: AsyncConnection) -> BackupAccepted:
        database = await load_database(conn, database_id, principal, for_update=True)
        _available(database)
        plan = (await conn.execute(sa.select(PROJECTS.c.plan).where(PROJECTS.c.id == database.project_id))).scalar()
        operation_id, _ = await request_backup(
            conn,
            platform.subjects,
            database=database,
            max_bytes=platform.settings.backup_max_bytes(str(plan)),
            actor=principal.actor,
            trigger="api",
        )
        return await _backup_accepted(conn, principal, operation_id)

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path=f"/databases/{database_id}/backups",
        body=None,
        status_code=202,
        change=change,
    )


@router.get("/databases/{database_id}/backups", response_model=BackupsPublic)
async def read_backups(*, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID) -> BackupsPublic:
    """A database's backups, newest first (deleted ones left out)."""
    async with platform.engine.connect() as conn:
        await load_database(conn, database_id, principal)
        rows = (
            await conn.execute(
                sa.select(BACKUPS)
                .where(BACKUPS.c.database_id == database_id, BACKUPS.c.status != BackupStatus.DELETED)
                .order_by(BACKUPS.c.created_at.desc())
            )
        ).all()
    return BackupsPublic(data=[to_backup_public(r) for r in rows], count=len(rows))


@router.get("/backups/{backup_id}", response_model=BackupPublic)
async def read_backup(*, platform: PlatformDep, principal: CurrentPrincipal, backup_id: uuid.UUID) -> BackupPublic:
    """Status, size, checksum and last verified restore of one backup."""
    async with platform.engine.connect() as conn:
        return to_backup_public(await load_backup(conn, backup_id, principal))


@router.delete("/backups/{backup_id}", status_code=202, response_model=BackupAccepted)
async def delete_backup(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    backup_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Delete a backup's stored object; 202 with the operation."""

    async def change(conn: AsyncConnection) -> BackupAccepted:
        backup = await load_backup(conn, backup_id, principal, for_update=True)
        if backup.status not in (BackupStatus.COMPLETED, BackupStatus.FAILED):
            raise ApiError(409, "backup_busy", f"the backup is {backup.status}")
        database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == backup.database_id))).one()
        operation_id = await request_backup_deletion(
            conn, platform.subjects, backup=backup, database=database, actor=principal.actor, reason="requested"
        )
        return await _backup_accepted(conn, principal, operation_id)

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="DELETE",
        path=f"/backups/{backup_id}",
        body=None,
        status_code=202,
        change=change,
    )


def _stored(backup: Row[Any], database: Row[Any]) -> dict[str, Any]:
    """The fields every command on a stored backup carries, for the database it acts on."""
    return {
        "database_id": database.id,
        "dbname": database.dbname,
        "role": database.role,
        "backup_id": backup.id,
        "object_key": backup.object_key,
        "source_database_id": backup.database_id,
        "sha256": backup.sha256,
        "key_id": backup.key_id,
    }


@router.post("/backups/{backup_id}/restore", status_code=202, response_model=Accepted)
async def restore_backup(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    backup_id: uuid.UUID,
    body: RestoreRequest,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Restore a backup over its database (``in_place``) or into a new database of the same project."""

    async def change(conn: AsyncConnection) -> Accepted:
        backup = await load_backup(conn, backup_id, principal)
        _completed(backup)
        source = await load_database(conn, backup.database_id, principal, for_update=True)
        command: StoredBackupCommand
        if body.target == "in_place":
            _available(source)
            await ensure_idle(conn, source.id)
            command = RestoreBackup(**_stored(backup, source))
            name, version = source.name, source.credentials_version
        else:
            assert body.name is not None
            identity = await new_database(platform, conn, backup.project_id, body.name)
            command = RestoreBackupToNewDatabase(**_stored(backup, source) | identity)
            name, version = body.name, 1
        return await accept_operation(
            platform,
            conn,
            principal,
            command,
            name=name,
            project_id=backup.project_id,
            credentials_version=version,
            host_id=source.host_id,
            backup_id=backup.id,
        )

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path=f"/backups/{backup_id}/restore",
        body=body.model_dump(mode="json"),
        status_code=202,
        change=change,
    )


@router.post("/backups/{backup_id}/verify", status_code=202, response_model=BackupAccepted)
async def verify_backup(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    backup_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Restore drill: restore into a scratch database, check it, drop it; records the time it took."""

    async def change(conn: AsyncConnection) -> BackupAccepted:
        backup = await load_backup(conn, backup_id, principal)
        _completed(backup)
        database = await load_database(conn, backup.database_id, principal)
        operation_id = await request_operation(
            conn,
            platform.subjects,
            command=VerifyBackup(**_stored(backup, database)),
            name=database.name,
            host_id=database.host_id,
            credentials_version=database.credentials_version,
            actor=principal.actor,
            project_id=backup.project_id,
            backup_id=backup.id,
        )
        return await _backup_accepted(conn, principal, operation_id)

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path=f"/backups/{backup_id}/verify",
        body=None,
        status_code=202,
        change=change,
    )


@router.get("/backups/{backup_id}/download", response_class=StreamingResponse)
async def download_backup(*, platform: PlatformDep, principal: CurrentPrincipal, backup_id: uuid.UUID) -> Any:
    """The backup as a ``pg_restore``-able custom-format dump, decrypted as it streams (owner only).

    Every chunk is authenticated before it is sent; a damaged object ends the transfer early
    instead of sending altered bytes.
    """
    async with platform.engine.connect() as conn:
        backup = await load_backup(conn, backup_id, principal)
        _completed(backup)
        name = (await conn.execute(sa.select(DATABASES.c.name).where(DATABASES.c.id == backup.database_id))).scalar()
    context = encryption_context(backup.project_id, backup.database_id, backup.id)
    plaintext = decrypt_stream(platform.store.get(backup.object_key), keys=platform.backup_keys, context=context)
    try:
        first = await anext(plaintext, b"")
    except ObjectNotFound:
        raise ApiError(409, "backup_object_missing", "the backup's object is missing from the object store") from None
    except BackupIntegrityError as exc:
        raise ApiError(409, "backup_damaged", f"the stored backup failed authentication: {exc}") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for piece in plaintext:
            yield piece

    async with platform.engine.begin() as conn:  # the audit log says who took the data out
        event = BackupDownloaded(database_id=backup.database_id, backup_id=backup.id)
        await record_event(
            conn, platform.subjects, project_event(event, project_id=backup.project_id, actor=principal.actor)
        )
    filename = f"{name}-{backup.id}.pgdump"
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.put("/databases/{database_id}/backup-policy", response_model=BackupPolicyPublic)
async def update_backup_policy(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID, body: BackupPolicyUpdate
) -> JSONResponse:
    """Set when the database is backed up and how long its backups are kept."""
    if body.schedule is not None:
        try:
            check_schedule(body.schedule, min_interval_seconds=platform.settings.backup_min_interval_seconds)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"schedule: {exc}") from None

    async def change(conn: AsyncConnection) -> BackupPolicyPublic:
        database = await load_database(conn, database_id, principal, for_update=True)
        if database.status in GONE:
            raise not_found("database")
        event = project_event(
            BackupPolicySet(database_id=database_id, **body.model_dump()),
            project_id=database.project_id,
            actor=principal.actor,
        )
        await record_event(conn, platform.subjects, event)
        return await _policy(conn, database_id)

    return await mutate(
        platform,
        principal,
        key=None,
        method="PUT",
        path=f"/databases/{database_id}/backup-policy",
        body=body.model_dump(mode="json"),
        status_code=200,
        change=change,
    )


@router.get("/databases/{database_id}/backup-policy", response_model=BackupPolicyPublic)
async def read_backup_policy(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> BackupPolicyPublic:
    """The database's backup policy (404 when none was set)."""
    async with platform.engine.connect() as conn:
        await load_database(conn, database_id, principal)
        return await _policy(conn, database_id)


async def _policy(conn: AsyncConnection, database_id: uuid.UUID) -> BackupPolicyPublic:
    row = (await conn.execute(sa.select(POLICIES).where(POLICIES.c.database_id == database_id))).first()
    if row is None:
        raise not_found("backup policy")
    return BackupPolicyPublic(
        database_id=row.database_id,
        schedule=row.schedule,
        retain_days=row.retain_days,
        keep_last=row.keep_last,
        updated_at=row.updated_at,
    )
