"""Backups: take one, restore one (in place or into a new database), drill one, delete one,
download one, and the per-database backup policy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import (
    Accepted,
    BackupAccepted,
    BackupPolicyPublic,
    BackupPolicyUpdate,
    BackupsPublic,
    RestoreRequest,
    RestoreToNewDatabase,
)
from api.platform import Platform
from api.principal import Principal
from api.usecases.databases import new_identity
from api.usecases.loading import (
    backup_public,
    check_completed,
    check_created,
    load_backup,
    load_database,
    load_live_database,
)
from api.usecases.operations import accept_operation, backup_accepted, ensure_idle
from infra.backup_crypto import BackupIntegrityError, decrypt_stream
from infra.errors import Unreachable
from infra.object_store import ObjectNotFound
from infra.plans import entitlements
from producers.backup_schedule import check_schedule
from producers.backups import request_backup, request_backup_deletion
from producers.commands import project_event
from readmodel.tables import BACKUPS, DATABASES, GONE, POLICIES, PROJECTS, BackupStatus, project_plan
from schemas.commands import RestoreBackup, RestoreBackupToNewDatabase, VerifyBackup, encryption_context
from schemas.events import BackupDownloaded, BackupPolicySet


async def back_up(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> BackupAccepted:
    database = await load_live_database(conn, database_id, principal, for_update=True)
    check_created(database)
    await ensure_idle(conn, database_id)  # never beside a delete, reset or restore of the same database
    plan = (await conn.execute(sa.select(project_plan()).where(PROJECTS.c.id == database.project_id))).scalar()
    operation_id, _ = await request_backup(
        conn,
        platform.outbox,
        database=database,
        max_bytes=entitlements(platform.settings, str(plan)).backup_max_bytes,
        actor=principal.actor,
        trigger="api",
    )
    return await backup_accepted(conn, principal, operation_id)


async def list_backups(conn: AsyncConnection, principal: Principal, database_id: uuid.UUID) -> BackupsPublic:
    await load_database(conn, database_id, principal)
    rows = (
        await conn.execute(
            sa.select(BACKUPS)
            .where(BACKUPS.c.database_id == database_id, BACKUPS.c.status != BackupStatus.DELETED)
            .order_by(BACKUPS.c.created_at.desc())
        )
    ).all()
    return BackupsPublic(data=[backup_public(r) for r in rows], count=len(rows))


async def delete_backup(
    conn: AsyncConnection, platform: Platform, principal: Principal, backup_id: uuid.UUID
) -> BackupAccepted:
    backup = await load_backup(conn, backup_id, principal, for_update=True)
    if backup.status not in (BackupStatus.COMPLETED, BackupStatus.FAILED):
        raise ApiError(409, "backup_busy", f"the backup is {backup.status}")
    database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == backup.database_id))).one()
    operation_id = await request_backup_deletion(
        conn, platform.outbox, backup=backup, database=database, actor=principal.actor, reason="requested"
    )
    return await backup_accepted(conn, principal, operation_id)


def _stored(backup: Row[Any]) -> dict[str, Any]:
    """What every command on a stored backup says about the backup."""
    return {
        "backup_id": backup.id,
        "object_key": backup.object_key,
        "source_database_id": backup.database_id,
        "sha256": backup.sha256,
        "key_id": backup.key_id,
    }


async def restore_backup(
    conn: AsyncConnection, platform: Platform, principal: Principal, backup_id: uuid.UUID, request: RestoreRequest
) -> Accepted:
    """Over its database (``in_place``: same name and credentials) or into a new database."""
    backup = await load_backup(conn, backup_id, principal)
    check_completed(backup)
    source = await load_database(conn, backup.database_id, principal, for_update=True)
    if isinstance(request, RestoreToNewDatabase):
        identity = await new_identity(platform, conn, backup.project_id, request.name, host_id=source.host_id)
        command: RestoreBackup | RestoreBackupToNewDatabase = RestoreBackupToNewDatabase(
            **_stored(backup) | identity.fields()
        )
        name, version = request.name, 1
    else:
        if source.status in GONE:
            raise not_found("database")
        check_created(source)
        await ensure_idle(conn, source.id)
        target = {"database_id": source.id, "dbname": source.dbname, "role": source.role}
        command = RestoreBackup(**_stored(backup) | target)
        name, version = source.name, source.credentials_version
    return await accept_operation(
        conn,
        platform,
        principal,
        command,
        name=name,
        project_id=backup.project_id,
        credentials_version=version,
        host_id=source.host_id,
        backup_id=backup.id,
    )


async def verify_backup(
    conn: AsyncConnection, platform: Platform, principal: Principal, backup_id: uuid.UUID
) -> BackupAccepted:
    """A restore drill: restored into a scratch database, checked, dropped."""
    backup = await load_backup(conn, backup_id, principal)
    check_completed(backup)
    database = await load_database(conn, backup.database_id, principal)
    target = {"database_id": database.id, "dbname": database.dbname, "role": database.role}
    accepted = await accept_operation(
        conn,
        platform,
        principal,
        VerifyBackup(**_stored(backup) | target),
        name=database.name,
        project_id=backup.project_id,
        credentials_version=database.credentials_version,
        host_id=database.host_id,
        backup_id=backup.id,
    )
    return await backup_accepted(conn, principal, accepted.operation.id)


@dataclass(frozen=True)
class Download:
    filename: str
    chunks: AsyncIterator[bytes]


async def download_backup(platform: Platform, principal: Principal, backup_id: uuid.UUID) -> Download:
    """The decrypted dump as it streams; its first chunk is checked before anything is sent, and
    who took the data out is recorded in the audit log."""
    async with platform.autocommit.connect() as conn:
        backup = await load_backup(conn, backup_id, principal)
        check_completed(backup)
        database = (
            await conn.execute(
                sa.select(DATABASES.c.name, DATABASES.c.host_id).where(DATABASES.c.id == backup.database_id)
            )
        ).one()
    context = encryption_context(backup.project_id, backup.database_id, backup.id)
    keys = platform.data_keys.source(
        host_id=database.host_id, backup_id=backup.id, project_id=backup.project_id, actor=principal.actor
    )
    plaintext = decrypt_stream(platform.store.get(backup.object_key), keys=keys, context=context)
    try:
        first = await anext(plaintext, b"")
    except ObjectNotFound:
        raise ApiError(409, "backup_object_missing", "the backup's object is missing from the object store") from None
    except BackupIntegrityError as exc:
        raise ApiError(409, "backup_damaged", f"the stored backup failed authentication: {exc}") from None
    except Unreachable:
        raise ApiError(503, "data_host_unavailable", "the backup's data host does not answer; try again") from None

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        async for piece in plaintext:
            yield piece

    async with platform.engine.begin() as conn:
        event = BackupDownloaded(database_id=backup.database_id, backup_id=backup.id)
        await platform.outbox.event(conn, project_event(event, project_id=backup.project_id, actor=principal.actor))
    return Download(filename=f"{database.name}-{backup.id}.pgdump", chunks=chunks())


async def set_backup_policy(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    database_id: uuid.UUID,
    policy: BackupPolicyUpdate,
) -> BackupPolicyPublic:
    database = await load_live_database(conn, database_id, principal, for_update=True)
    if policy.schedule is not None:
        plan = (await conn.execute(sa.select(project_plan()).where(PROJECTS.c.id == database.project_id))).scalar()
        shortest = entitlements(platform.settings, str(plan)).backup_min_interval_seconds
        try:
            check_schedule(policy.schedule, min_interval_seconds=shortest)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"schedule: {exc}") from None
    event = project_event(
        BackupPolicySet(database_id=database_id, **policy.model_dump()),
        project_id=database.project_id,
        actor=principal.actor,
    )
    await platform.outbox.event(conn, event)
    return await read_backup_policy(conn, principal, database_id)


async def read_backup_policy(conn: AsyncConnection, principal: Principal, database_id: uuid.UUID) -> BackupPolicyPublic:
    await load_database(conn, database_id, principal)
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
