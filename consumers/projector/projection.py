"""How each event changes the read model. Pure function of the event: no clock, no randomness,
so the live tables and a replay of the stream into an empty schema come out identical.

Operation rows only move forward: an event applies only when its sequence is above the
operation's ``last_sequence``, which makes a duplicate (or a re-emitted) event a no-op.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.metadata.models import (
    AUDIT,
    BACKUPS,
    BASE_BACKUPS,
    DATABASES,
    OPERATIONS,
    POLICIES,
    PROJECTS,
    STEPS,
    WAL_SEGMENTS,
    BackupStatus,
    DatabaseStatus,
    OperationStatus,
)
from schemas.commands import OperationKind, backup_object_key
from schemas.envelope import Envelope
from schemas.events import (
    SUCCEEDED,
    ApiTokenCreated,
    BackupCompleted,
    BackupDeleted,
    BackupDownloaded,
    BackupMissed,
    BackupPolicySet,
    BackupVerified,
    BaseBackupCompleted,
    BaseBackupDeleted,
    CancelRequested,
    CredentialsRotated,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    ProjectCreated,
    WalSegmentArchived,
)

BUSY = {
    OperationKind.CREATE: DatabaseStatus.CREATING,
    OperationKind.DELETE: DatabaseStatus.DELETING,
    OperationKind.RESET: DatabaseStatus.RESETTING,
    OperationKind.ROTATE_CREDENTIALS: DatabaseStatus.ROTATING,
    OperationKind.RESTORE: DatabaseStatus.RESTORING,
    OperationKind.RESTORE_NEW_DATABASE: DatabaseStatus.RESTORING,
    OperationKind.PITR_RESTORE: DatabaseStatus.RESTORING,
    OperationKind.PITR_RESTORE_NEW_DATABASE: DatabaseStatus.RESTORING,
}
"""Kinds that change the database, and its status meanwhile; backups and drills leave it alone."""
CREATES_DATABASE = {
    OperationKind.CREATE,
    OperationKind.RESTORE_NEW_DATABASE,
    OperationKind.PITR_RESTORE_NEW_DATABASE,
}
AFTER_SUCCESS = {
    kind: DatabaseStatus.DELETED if kind is OperationKind.DELETE else DatabaseStatus.AVAILABLE for kind in BUSY
}
SUCCESS_TYPES = {event.TYPE for event in SUCCEEDED.values()}
ACTIONS = {
    OperationKind.BACKUP: "backup.create",
    OperationKind.RESTORE: "backup.restore",
    OperationKind.RESTORE_NEW_DATABASE: "backup.restore_new_database",
    OperationKind.VERIFY_BACKUP: "backup.verify",
    OperationKind.DELETE_BACKUP: "backup.delete",
    OperationKind.PITR_RESTORE: "database.restore_point_in_time",
    OperationKind.PITR_RESTORE_NEW_DATABASE: "database.restore_point_in_time_new_database",
}


def action(kind: OperationKind) -> str:
    return ACTIONS.get(kind, f"database.{kind.value}")


async def apply(conn: AsyncConnection, env: Envelope) -> None:
    event = env.payload()
    match event:
        case ProjectCreated():
            await conn.execute(
                insert(PROJECTS)
                .values(id=env.project_id, name=event.name, plan=event.plan, created_at=env.occurred_at)
                .on_conflict_do_nothing()
            )
            await _audit(conn, env, "project.create", "project", env.project_id, "succeeded", {"name": event.name})
        case ApiTokenCreated():
            await _audit(conn, env, "api_token.create", "api_token", event.token_id, "succeeded", {"name": event.name})
        case BackupPolicySet():
            await _policy(conn, env, event)
        case WalSegmentArchived():
            values = {"archived_at": event.archived_at, "size_bytes": event.size_bytes}
            await conn.execute(
                insert(WAL_SEGMENTS)
                .values(host_id=event.host_id, segment=event.segment, **values)
                .on_conflict_do_update(index_elements=[WAL_SEGMENTS.c.host_id, WAL_SEGMENTS.c.segment], set_=values)
            )
        case BaseBackupCompleted():
            await conn.execute(
                insert(BASE_BACKUPS)
                .values(
                    id=event.base_backup_id,
                    host_id=event.host_id,
                    start_segment=event.start_segment,
                    stop_segment=event.stop_segment,
                    started_at=event.started_at,
                    finished_at=event.finished_at,
                    size_bytes=event.size_bytes,
                )
                .on_conflict_do_nothing()
            )
        case BaseBackupDeleted():
            await conn.execute(
                sa.update(BASE_BACKUPS).where(BASE_BACKUPS.c.id == event.base_backup_id).values(deleted=True)
            )
            await conn.execute(
                sa.delete(WAL_SEGMENTS).where(
                    WAL_SEGMENTS.c.host_id == event.host_id, WAL_SEGMENTS.c.segment < event.wal_kept_from
                )
            )
        case CancelRequested():
            detail = {"operation_id": str(event.operation_id)}
            await _audit(conn, env, "operation.cancel", "database", event.database_id, "requested", detail)
        case BackupDownloaded():
            detail = {"backup_id": str(event.backup_id)}
            await _audit(conn, env, "backup.download", "database", event.database_id, "succeeded", detail)
        case BackupMissed():
            detail = {"slot": event.slot.isoformat(), "reason": event.reason}
            await _audit(conn, env, "backup.missed", "database", event.database_id, "missed", detail)
        case OperationRequested():
            await _requested(conn, env, event)
        case OperationEvent():
            if await _advance(conn, env, event):
                await _audit_outcome(conn, env, event)


async def _requested(conn: AsyncConnection, env: Envelope, event: OperationRequested) -> None:
    created = await conn.execute(
        insert(OPERATIONS)
        .values(
            id=env.correlation_id,
            project_id=env.project_id,
            database_id=event.database_id,
            kind=event.kind.value,
            status=OperationStatus.ACCEPTED.value,
            backup_id=event.backup_id,
            point_in_time=event.point_in_time,
            actor=env.actor,
            last_sequence=env.sequence,
            created_at=env.occurred_at,
            updated_at=env.occurred_at,
        )
        .on_conflict_do_nothing()
    )
    if not created.rowcount:
        return
    if event.kind is OperationKind.BACKUP and event.backup_id is not None:
        await conn.execute(
            insert(BACKUPS).values(
                id=event.backup_id,
                project_id=env.project_id,
                database_id=event.database_id,
                status=BackupStatus.PENDING.value,
                trigger=event.trigger,
                object_key=backup_object_key(env.project_id, event.database_id, event.backup_id),
                operation_id=env.correlation_id,
                created_at=env.occurred_at,
                updated_at=env.occurred_at,
            )
        )
    elif event.kind is OperationKind.DELETE_BACKUP:
        await _set_backup(conn, env, event.backup_id, status=BackupStatus.DELETING)
    if event.kind in CREATES_DATABASE:
        await conn.execute(
            insert(DATABASES).values(
                id=event.database_id,
                project_id=env.project_id,
                name=event.name,
                host_id=event.host_id,
                dbname=event.dbname,
                role=event.role,
                status=BUSY[event.kind].value,
                credentials_version=event.credentials_version,
                last_operation_id=env.correlation_id,
                created_at=env.occurred_at,
                updated_at=env.occurred_at,
            )
        )
    elif event.kind in BUSY:
        await _set_database(conn, env, event, status=BUSY[event.kind])
    detail: dict[str, Any] = {"name": event.name, "trigger": event.trigger}
    if event.backup_id:
        detail["backup_id"] = str(event.backup_id)
    await _audit(conn, env, action(event.kind), "database", event.database_id, "requested", detail)


async def _advance(conn: AsyncConnection, env: Envelope, event: OperationEvent) -> bool:
    """Move the operation forward; ``False`` for an event already applied."""
    values: dict[str, Any] = {"last_sequence": env.sequence, "updated_at": env.occurred_at}
    match event:
        case OperationStarted():
            values["status"] = OperationStatus.RUNNING.value
        case OperationStepCompleted() | OperationStepCompensated() | OperationStepFailed():
            pass
        case OperationFailed() | OperationCompensated():
            failed = isinstance(event, OperationFailed)
            values["status"] = (OperationStatus.FAILED if failed else OperationStatus.COMPENSATED).value
            values["error"] = event.reason
        case _ if env.type in SUCCESS_TYPES:
            values["status"] = OperationStatus.SUCCEEDED.value
    moved = await conn.execute(
        sa.update(OPERATIONS)
        .where(OPERATIONS.c.id == env.correlation_id, OPERATIONS.c.last_sequence < env.sequence)
        .values(**values)
    )
    if not moved.rowcount:
        return False
    match event:
        case OperationStarted() if event.kind is OperationKind.BACKUP:
            await _set_backup(conn, env, None, status=BackupStatus.RUNNING)
        case OperationStepCompleted():
            await _step(conn, env, event.step, "completed", None)
        case OperationStepFailed():
            await _step(conn, env, event.step, "failed", event.reason)
        case OperationStepCompensated():
            await _step(conn, env, event.step, "compensated", None)
        case OperationFailed() | OperationCompensated():
            await _failed(conn, env, event)
        case CredentialsRotated():
            await _set_database(
                conn, env, event, status=AFTER_SUCCESS[event.kind], credentials_version=event.credentials_version
            )
        case BackupCompleted():
            await _set_backup(
                conn,
                env,
                event.backup_id,
                status=BackupStatus.COMPLETED,
                size_bytes=event.size_bytes,
                dump_bytes=event.dump_bytes,
                sha256=event.sha256,
                key_id=event.key_id,
                duration_ms=event.duration_ms,
                completed_at=env.occurred_at,
            )
        case BackupVerified():
            await _set_backup(
                conn,
                env,
                event.backup_id,
                last_verified_at=env.occurred_at,
                verify_duration_ms=event.duration_ms,
                verified_tables=event.tables,
            )
            await conn.execute(
                sa.update(DATABASES)
                .where(DATABASES.c.id == event.database_id)
                .values(last_verified_backup_id=event.backup_id, last_verified_restore_at=env.occurred_at)
            )
        case BackupDeleted():
            await _set_backup(conn, env, event.backup_id, status=BackupStatus.DELETED)
        case _ if env.type in SUCCESS_TYPES and event.kind in BUSY:
            await _set_database(conn, env, event, status=AFTER_SUCCESS[event.kind])
    return True


async def _failed(conn: AsyncConnection, env: Envelope, event: OperationFailed | OperationCompensated) -> None:
    if event.kind in BUSY:
        failed = DatabaseStatus.FAILED if event.kind in CREATES_DATABASE else DatabaseStatus.AVAILABLE
        await _set_database(conn, env, event, status=failed)
    elif event.kind is OperationKind.BACKUP:
        await _set_backup(conn, env, None, status=BackupStatus.FAILED, error=event.reason)
    elif event.kind is OperationKind.DELETE_BACKUP:
        await _set_backup(conn, env, None, status=BackupStatus.COMPLETED)


async def _set_backup(conn: AsyncConnection, env: Envelope, backup_id: Any, **values: Any) -> None:
    """Update a backup by id, or (``backup_id=None``) the one the operation is about."""
    if "status" in values:
        values["status"] = values["status"].value
    if backup_id is None:
        backup_id = sa.select(OPERATIONS.c.backup_id).where(OPERATIONS.c.id == env.correlation_id).scalar_subquery()
    await conn.execute(sa.update(BACKUPS).where(BACKUPS.c.id == backup_id).values(updated_at=env.occurred_at, **values))


async def _policy(conn: AsyncConnection, env: Envelope, event: BackupPolicySet) -> None:
    values = {
        "schedule": event.schedule,
        "retain_days": event.retain_days,
        "keep_last": event.keep_last,
        "updated_at": env.occurred_at,
    }
    await conn.execute(
        insert(POLICIES)
        .values(database_id=event.database_id, project_id=env.project_id, **values)
        .on_conflict_do_update(index_elements=[POLICIES.c.database_id], set_=values)
    )
    detail = {"schedule": event.schedule, "retain_days": event.retain_days, "keep_last": event.keep_last}
    await _audit(conn, env, "backup.policy_set", "database", event.database_id, "succeeded", detail)


async def _step(conn: AsyncConnection, env: Envelope, name: str, status: str, detail: str | None) -> None:
    values = {"status": status, "detail": detail, "updated_at": env.occurred_at}
    await conn.execute(
        insert(STEPS)
        .values(operation_id=env.correlation_id, name=name, position=env.sequence, **values)
        .on_conflict_do_update(index_elements=[STEPS.c.operation_id, STEPS.c.name], set_=values)
    )


async def _set_database(
    conn: AsyncConnection, env: Envelope, event: OperationEvent, *, status: DatabaseStatus, **values: Any
) -> None:
    await conn.execute(
        sa.update(DATABASES)
        .where(DATABASES.c.id == event.database_id)
        .values(status=status.value, last_operation_id=env.correlation_id, updated_at=env.occurred_at, **values)
    )


async def _audit_outcome(conn: AsyncConnection, env: Envelope, event: OperationEvent) -> None:
    if isinstance(event, OperationFailed | OperationCompensated):
        outcome = "failed" if isinstance(event, OperationFailed) else "compensated"
        detail = {"reason": event.reason}
    elif env.type in SUCCESS_TYPES:
        outcome, detail = "succeeded", {}
    else:
        return
    await _audit(conn, env, action(event.kind), "database", event.database_id, outcome, detail)


async def _audit(
    conn: AsyncConnection,
    env: Envelope,
    action: str,
    resource_type: str,
    resource_id: Any,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    operation_id = env.correlation_id if env.sequence or env.type == OperationRequested.TYPE else None
    await conn.execute(
        insert(AUDIT)
        .values(
            id=env.id,
            project_id=env.project_id,
            occurred_at=env.occurred_at,
            actor=env.actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            operation_id=operation_id,
            outcome=outcome,
            detail=detail,
        )
        .on_conflict_do_nothing()
    )
