"""How each event changes the read model: one small function per event type, looked up in
``PROJECTIONS``. Each is a pure function of the event (no clock, no randomness, no settings), so
the live tables and a replay of the stream into an empty schema come out identical.

Operation rows only move forward: an operation event applies only when its sequence is above
the operation's ``last_sequence``, which makes a duplicate (or a re-emitted) event a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from readmodel.tables import (
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
from schemas.commands import OperationKind
from schemas.envelope import Envelope, Payload
from schemas.events import (
    ApiTokenCreated,
    ApiTokenRevoked,
    BackupCompleted,
    BackupDeleted,
    BackupDownloaded,
    BackupMissed,
    BackupPolicySet,
    BackupVerified,
    BaseBackupCompleted,
    BaseBackupDeleted,
    CancelRequested,
    CommandRejected,
    CredentialsRead,
    CredentialsRotated,
    DatabaseCreated,
    DatabaseDeleted,
    DatabaseReset,
    DatabaseRestored,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    ProjectCreated,
    ProjectDeleted,
    VerifierDrifted,
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
    """The audit log's name for what an operation of ``kind`` does."""
    return ACTIONS.get(kind, f"database.{kind.value}")


# --- projects, tokens, policies, downloads: events outside any operation -------------------


async def project_created(conn: AsyncConnection, env: Envelope, event: ProjectCreated) -> None:
    await conn.execute(
        insert(PROJECTS)
        .values(id=env.project_id, name=event.name, plan=event.plan, created_at=env.occurred_at)
        .on_conflict_do_nothing()
    )
    await _audit(conn, env, "project.create", "project", env.project_id, "succeeded", {"name": event.name})


async def project_deleted(conn: AsyncConnection, env: Envelope, event: ProjectDeleted) -> None:
    await conn.execute(sa.update(PROJECTS).where(PROJECTS.c.id == env.project_id).values(deleted_at=env.occurred_at))
    await _audit(conn, env, "project.delete", "project", env.project_id, "succeeded", {"name": event.name})


async def api_token_created(conn: AsyncConnection, env: Envelope, event: ApiTokenCreated) -> None:
    await _audit(conn, env, "api_token.create", "api_token", event.token_id, "succeeded", {"name": event.name})


async def api_token_revoked(conn: AsyncConnection, env: Envelope, event: ApiTokenRevoked) -> None:
    await _audit(conn, env, "api_token.revoke", "api_token", event.token_id, "succeeded", {"name": event.name})


async def backup_policy_set(conn: AsyncConnection, env: Envelope, event: BackupPolicySet) -> None:
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


async def cancel_requested(conn: AsyncConnection, env: Envelope, event: CancelRequested) -> None:
    detail = {"operation_id": str(event.operation_id)}
    await _audit(conn, env, "operation.cancel", "database", event.database_id, "requested", detail)


async def credentials_read(conn: AsyncConnection, env: Envelope, event: CredentialsRead) -> None:
    detail = {"credentials_version": event.credentials_version}
    await _audit(conn, env, "database.credentials_read", "database", event.database_id, "succeeded", detail)


async def backup_downloaded(conn: AsyncConnection, env: Envelope, event: BackupDownloaded) -> None:
    detail = {"backup_id": str(event.backup_id)}
    await _audit(conn, env, "backup.download", "database", event.database_id, "succeeded", detail)


async def backup_missed(conn: AsyncConnection, env: Envelope, event: BackupMissed) -> None:
    detail = {"slot": event.slot.isoformat(), "reason": event.reason}
    await _audit(conn, env, "backup.missed", "database", event.database_id, "missed", detail)


async def command_rejected(conn: AsyncConnection, env: Envelope, event: CommandRejected) -> None:
    detail = {"host_id": event.host_id, "subject": event.subject, "reason": event.reason}
    await _audit(conn, env, "command.rejected", "command", env.correlation_id, "rejected", detail)


async def verifier_drifted(conn: AsyncConnection, env: Envelope, event: VerifierDrifted) -> None:
    detail = {"host_id": event.host_id, "dbname": event.dbname}
    await _audit(conn, env, "database.verifier_drift", "database", event.database_id, "detected", detail)


# --- the data host's WAL archive and base backups ------------------------------------------


async def wal_segment_archived(conn: AsyncConnection, env: Envelope, event: WalSegmentArchived) -> None:
    values = {"archived_at": event.archived_at, "size_bytes": event.size_bytes}
    await conn.execute(
        insert(WAL_SEGMENTS)
        .values(host_id=event.host_id, segment=event.segment, **values)
        .on_conflict_do_update(index_elements=[WAL_SEGMENTS.c.host_id, WAL_SEGMENTS.c.segment], set_=values)
    )


async def base_backup_completed(conn: AsyncConnection, env: Envelope, event: BaseBackupCompleted) -> None:
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


async def base_backup_deleted(conn: AsyncConnection, env: Envelope, event: BaseBackupDeleted) -> None:
    await conn.execute(sa.update(BASE_BACKUPS).where(BASE_BACKUPS.c.id == event.base_backup_id).values(deleted=True))
    await conn.execute(
        sa.delete(WAL_SEGMENTS).where(
            WAL_SEGMENTS.c.host_id == event.host_id, WAL_SEGMENTS.c.segment < event.wal_kept_from
        )
    )


# --- operations: requested, then started, steps, and one ending -----------------------------


async def operation_requested(conn: AsyncConnection, env: Envelope, event: OperationRequested) -> None:
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
                object_key=event.object_key or _first_release_object_key(env.project_id, event),
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


def _first_release_object_key(project_id: uuid.UUID, event: OperationRequested) -> str:
    """Backup requests recorded before events carried the object key used this layout."""
    return f"backups/{project_id}/{event.database_id}/{event.backup_id}.pgdump.enc"


async def operation_started(conn: AsyncConnection, env: Envelope, event: OperationStarted) -> None:
    if await _advance(conn, env, status=OperationStatus.RUNNING) and event.kind is OperationKind.BACKUP:
        await _set_backup(conn, env, None, status=BackupStatus.RUNNING)


async def step_completed(conn: AsyncConnection, env: Envelope, event: OperationStepCompleted) -> None:
    if await _advance(conn, env):
        await _step(conn, env, event.step, "completed", None)


async def step_failed(conn: AsyncConnection, env: Envelope, event: OperationStepFailed) -> None:
    if await _advance(conn, env, error_detail=event.detail):
        await _step(conn, env, event.step, "failed", event.reason)


async def step_compensated(conn: AsyncConnection, env: Envelope, event: OperationStepCompensated) -> None:
    if await _advance(conn, env):
        await _step(conn, env, event.step, "compensated", None)


async def operation_failed(conn: AsyncConnection, env: Envelope, event: OperationFailed) -> None:
    await _ended_without_effect(conn, env, event, OperationStatus.FAILED, error_detail=event.detail)


async def operation_compensated(conn: AsyncConnection, env: Envelope, event: OperationCompensated) -> None:
    await _ended_without_effect(conn, env, event, OperationStatus.COMPENSATED)


async def _ended_without_effect(
    conn: AsyncConnection,
    env: Envelope,
    event: OperationFailed | OperationCompensated,
    status: OperationStatus,
    **details: str | None,
) -> None:
    if not await _advance(conn, env, status=status, error=event.reason, **{k: v for k, v in details.items() if v}):
        return
    if event.kind in BUSY:
        after = DatabaseStatus.FAILED if event.kind in CREATES_DATABASE else DatabaseStatus.AVAILABLE
        await _set_database(conn, env, event, status=after)
    elif event.kind is OperationKind.BACKUP:
        await _set_backup(conn, env, None, status=BackupStatus.FAILED, error=event.reason)
    elif event.kind is OperationKind.DELETE_BACKUP:
        await _set_backup(conn, env, None, status=BackupStatus.COMPLETED)
    await _audit(conn, env, action(event.kind), "database", event.database_id, status.value, {"reason": event.reason})


# --- success events: one per operation kind -----------------------------------------------


async def database_created(conn: AsyncConnection, env: Envelope, event: DatabaseCreated) -> None:
    if await _succeeded(conn, env, event):
        await _set_database(conn, env, event, status=DatabaseStatus.AVAILABLE)


async def database_deleted(conn: AsyncConnection, env: Envelope, event: DatabaseDeleted) -> None:
    if await _succeeded(conn, env, event):
        deleted_at = event.writes_ended_at or env.occurred_at
        await _set_database(conn, env, event, status=DatabaseStatus.DELETED, deleted_at=deleted_at)


async def database_reset(conn: AsyncConnection, env: Envelope, event: DatabaseReset) -> None:
    if await _succeeded(conn, env, event):
        await _set_database(conn, env, event, status=DatabaseStatus.AVAILABLE)


async def database_restored(conn: AsyncConnection, env: Envelope, event: DatabaseRestored) -> None:
    if await _succeeded(conn, env, event):
        await _set_database(conn, env, event, status=DatabaseStatus.AVAILABLE)


async def credentials_rotated(conn: AsyncConnection, env: Envelope, event: CredentialsRotated) -> None:
    if await _succeeded(conn, env, event):
        await _set_database(
            conn, env, event, status=DatabaseStatus.AVAILABLE, credentials_version=event.credentials_version
        )


async def backup_completed(conn: AsyncConnection, env: Envelope, event: BackupCompleted) -> None:
    if await _succeeded(conn, env, event):
        await _set_backup(
            conn,
            env,
            event.backup_id,
            status=BackupStatus.COMPLETED,
            object_key=event.object_key,
            size_bytes=event.size_bytes,
            dump_bytes=event.dump_bytes,
            sha256=event.sha256,
            key_id=event.key_id,
            duration_ms=event.duration_ms,
            completed_at=env.occurred_at,
        )


async def backup_verified(conn: AsyncConnection, env: Envelope, event: BackupVerified) -> None:
    if not await _succeeded(conn, env, event):
        return
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


async def backup_deleted(conn: AsyncConnection, env: Envelope, event: BackupDeleted) -> None:
    if await _succeeded(conn, env, event):
        await _set_backup(conn, env, event.backup_id, status=BackupStatus.DELETED)


# --- the table ------------------------------------------------------------------------------

Projection = Callable[[AsyncConnection, Envelope, Any], Awaitable[None]]
PROJECTIONS: dict[type[Payload], Projection] = {
    ProjectCreated: project_created,
    ProjectDeleted: project_deleted,
    ApiTokenCreated: api_token_created,
    ApiTokenRevoked: api_token_revoked,
    BackupPolicySet: backup_policy_set,
    CancelRequested: cancel_requested,
    BackupDownloaded: backup_downloaded,
    CredentialsRead: credentials_read,
    BackupMissed: backup_missed,
    CommandRejected: command_rejected,
    VerifierDrifted: verifier_drifted,
    WalSegmentArchived: wal_segment_archived,
    BaseBackupCompleted: base_backup_completed,
    BaseBackupDeleted: base_backup_deleted,
    OperationRequested: operation_requested,
    OperationStarted: operation_started,
    OperationStepCompleted: step_completed,
    OperationStepFailed: step_failed,
    OperationStepCompensated: step_compensated,
    OperationFailed: operation_failed,
    OperationCompensated: operation_compensated,
    DatabaseCreated: database_created,
    DatabaseDeleted: database_deleted,
    DatabaseReset: database_reset,
    DatabaseRestored: database_restored,
    CredentialsRotated: credentials_rotated,
    BackupCompleted: backup_completed,
    BackupVerified: backup_verified,
    BackupDeleted: backup_deleted,
}
"""Every event type that changes the read model; any other type (WAL alerts) changes nothing."""


async def apply(conn: AsyncConnection, env: Envelope) -> None:
    """Apply one event inside the caller's transaction."""
    event = env.payload()
    projection = PROJECTIONS.get(type(event))
    if projection is not None:
        await projection(conn, env, event)


# --- shared pieces --------------------------------------------------------------------------


async def _advance(conn: AsyncConnection, env: Envelope, **values: Any) -> bool:
    """Move the operation to this event (and ``values``); ``False`` for an event already applied."""
    values = {k: v.value if isinstance(v, OperationStatus) else v for k, v in values.items()}
    moved = await conn.execute(
        sa.update(OPERATIONS)
        .where(OPERATIONS.c.id == env.correlation_id, OPERATIONS.c.last_sequence < env.sequence)
        .values(last_sequence=env.sequence, updated_at=env.occurred_at, **values)
    )
    return bool(moved.rowcount)


async def _succeeded(conn: AsyncConnection, env: Envelope, event: OperationEvent) -> bool:
    """The operation succeeded (audited); ``False`` for an event already applied."""
    if not await _advance(conn, env, status=OperationStatus.SUCCEEDED):
        return False
    await _audit(conn, env, action(event.kind), "database", event.database_id, "succeeded", {})
    return True


async def _set_backup(conn: AsyncConnection, env: Envelope, backup_id: uuid.UUID | None, **values: Any) -> None:
    """Update a backup by id, or (``backup_id=None``) the one the operation is about."""
    if "status" in values:
        values["status"] = values["status"].value
    target: Any = backup_id
    if backup_id is None:
        target = sa.select(OPERATIONS.c.backup_id).where(OPERATIONS.c.id == env.correlation_id).scalar_subquery()
    await conn.execute(sa.update(BACKUPS).where(BACKUPS.c.id == target).values(updated_at=env.occurred_at, **values))


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


async def _audit(
    conn: AsyncConnection,
    env: Envelope,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID,
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
