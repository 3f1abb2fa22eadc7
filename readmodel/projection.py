"""How each event changes the read model: one small function per event type, looked up in
``PROJECTIONS``. Each is a pure function of the event (no clock, no randomness, no settings), so
the live tables and a replay of the stream into an empty schema come out identical.

Operation rows only move forward: an operation event applies only when its sequence is above
the operation's ``last_sequence``, which makes a duplicate (or a re-emitted) event a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from readmodel.batch import Batch, OperationState
from readmodel.tables import (
    AUDIT,
    BACKUPS,
    BASE_BACKUPS,
    DATABASES,
    DRIFTS,
    EVENTS,
    HOST_STATES,
    POLICIES,
    PROJECTS,
    STEPS,
    WAL_SEGMENTS,
    BackupStatus,
    DatabaseStatus,
    DriftStatus,
    OperationStatus,
)
from schemas import public_events as public
from schemas.commands import OperationKind
from schemas.envelope import Envelope, Payload
from schemas.events import (
    PLATFORM_PROJECT,
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
    DatabaseResumed,
    DatabaseSuspended,
    DriftDetected,
    DriftRepaired,
    DriftResolved,
    HostStateReported,
    InvitationRevoked,
    MemberAdded,
    MemberInvited,
    MemberRemoved,
    MemberRoleChanged,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    OrganizationCreated,
    OrganizationPlanChanged,
    OrganizationResumed,
    OrganizationSuspended,
    ProjectCreated,
    ProjectDeleted,
    ProjectPlanChanged,
    RetryRequested,
    VerifierDrifted,
    WalSegmentArchived,
    WebhookEndpointDisabled,
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
    OperationKind.SUSPEND: DatabaseStatus.SUSPENDING,
    OperationKind.RESUME: DatabaseStatus.RESUMING,
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


async def project_created(batch: Batch, env: Envelope, event: ProjectCreated) -> None:
    values = {
        "id": env.project_id,
        "name": event.name,
        "plan": event.plan,
        "organization_id": event.organization_id,
        "created_at": env.occurred_at,
    }
    batch.insert(PROJECTS, values, on_conflict=())
    _audit(batch, env, "project.create", "project", env.project_id, "succeeded", {"name": event.name})


async def project_deleted(batch: Batch, env: Envelope, event: ProjectDeleted) -> None:
    batch.update(PROJECTS, env.project_id, {"deleted_at": env.occurred_at})
    _audit(batch, env, "project.delete", "project", env.project_id, "succeeded", {"name": event.name})


async def project_plan_changed(batch: Batch, env: Envelope, event: ProjectPlanChanged) -> None:
    batch.update(PROJECTS, env.project_id, {"plan": event.plan})
    detail = {"plan": event.plan, "previous": event.previous}
    _audit(batch, env, "project.plan_change", "project", env.project_id, "succeeded", detail)


async def organization_created(batch: Batch, env: Envelope, event: OrganizationCreated) -> None:
    detail = {"name": event.name, "owner": str(event.owner)}
    _audit(batch, env, "organization.create", "organization", env.project_id, "succeeded", detail)


async def organization_plan_changed(batch: Batch, env: Envelope, event: OrganizationPlanChanged) -> None:
    detail = {"plan": event.plan, "previous": event.previous}
    _audit(batch, env, "organization.plan_change", "organization", env.project_id, "succeeded", detail)


async def organization_suspended(batch: Batch, env: Envelope, event: OrganizationSuspended) -> None:
    _audit(batch, env, "organization.suspend", "organization", env.project_id, "succeeded", {"reason": event.reason})


async def organization_resumed(batch: Batch, env: Envelope, event: OrganizationResumed) -> None:
    _audit(batch, env, "organization.resume", "organization", env.project_id, "succeeded", {})


async def member_invited(batch: Batch, env: Envelope, event: MemberInvited) -> None:
    detail = {"email": event.email, "role": event.role}
    _audit(batch, env, "member.invite", "invitation", event.invitation_id, "succeeded", detail)


async def invitation_revoked(batch: Batch, env: Envelope, event: InvitationRevoked) -> None:
    _audit(
        batch, env, "member.invitation_revoke", "invitation", event.invitation_id, "succeeded", {"email": event.email}
    )


async def member_added(batch: Batch, env: Envelope, event: MemberAdded) -> None:
    detail = {"role": event.role, "invitation_id": str(event.invitation_id) if event.invitation_id else None}
    _audit(batch, env, "member.add", "user", event.user_id, "succeeded", detail)


async def member_role_changed(batch: Batch, env: Envelope, event: MemberRoleChanged) -> None:
    detail = {"role": event.role, "previous": event.previous}
    _audit(batch, env, "member.role_change", "user", event.user_id, "succeeded", detail)


async def member_removed(batch: Batch, env: Envelope, event: MemberRemoved) -> None:
    _audit(batch, env, "member.remove", "user", event.user_id, "succeeded", {"role": event.role})


async def api_token_created(batch: Batch, env: Envelope, event: ApiTokenCreated) -> None:
    _audit(batch, env, "api_token.create", "api_token", event.token_id, "succeeded", {"name": event.name})


async def api_token_revoked(batch: Batch, env: Envelope, event: ApiTokenRevoked) -> None:
    _audit(batch, env, "api_token.revoke", "api_token", event.token_id, "succeeded", {"name": event.name})


async def backup_policy_set(batch: Batch, env: Envelope, event: BackupPolicySet) -> None:
    values = {
        "schedule": event.schedule,
        "retain_days": event.retain_days,
        "keep_last": event.keep_last,
        "updated_at": env.occurred_at,
    }
    row = {"database_id": event.database_id, "project_id": env.project_id, **values}
    batch.insert(POLICIES, row, on_conflict=values)
    detail = {"schedule": event.schedule, "retain_days": event.retain_days, "keep_last": event.keep_last}
    _audit(batch, env, "backup.policy_set", "database", event.database_id, "succeeded", detail)


async def cancel_requested(batch: Batch, env: Envelope, event: CancelRequested) -> None:
    detail = {"operation_id": str(event.operation_id)}
    _audit(batch, env, "operation.cancel", "database", event.database_id, "requested", detail)


async def retry_requested(batch: Batch, env: Envelope, event: RetryRequested) -> None:
    detail = {"operation_id": str(event.operation_id)}
    _audit(batch, env, "operation.retry", "database", event.database_id, "requested", detail)


async def credentials_read(batch: Batch, env: Envelope, event: CredentialsRead) -> None:
    detail = {"credentials_version": event.credentials_version}
    _audit(batch, env, "database.credentials_read", "database", event.database_id, "succeeded", detail)


async def backup_downloaded(batch: Batch, env: Envelope, event: BackupDownloaded) -> None:
    detail = {"backup_id": str(event.backup_id)}
    _audit(batch, env, "backup.download", "database", event.database_id, "succeeded", detail)


async def backup_missed(batch: Batch, env: Envelope, event: BackupMissed) -> None:
    detail = {"slot": event.slot.isoformat(), "reason": event.reason}
    _audit(batch, env, "backup.missed", "database", event.database_id, "missed", detail)


async def command_rejected(batch: Batch, env: Envelope, event: CommandRejected) -> None:
    detail = {"host_id": event.host_id, "subject": event.subject, "reason": event.reason}
    _audit(batch, env, "command.rejected", "command", env.correlation_id, "rejected", detail)


async def verifier_drifted(batch: Batch, env: Envelope, event: VerifierDrifted) -> None:
    detail = {"host_id": event.host_id, "dbname": event.dbname}
    _audit(batch, env, "database.verifier_drift", "database", event.database_id, "detected", detail)


async def webhook_endpoint_disabled(batch: Batch, env: Envelope, event: WebhookEndpointDisabled) -> None:
    data = public.WebhookEndpointDisabled(project_id=env.project_id, endpoint_id=event.endpoint_id, reason=event.reason)
    if not batch.first_publication(_public_id(env, data)):
        return
    _audit(batch, env, "webhook.disable", "webhook", event.endpoint_id, "disabled", {"reason": event.reason})
    _publish(batch, env, data)


# --- the data host's state and its drifts (``producers.reconciler``) -------------------------


async def host_state_reported(batch: Batch, env: Envelope, event: HostStateReported) -> None:
    """The host's latest report replaces older ones (a redelivered older one changes nothing)."""
    values = event.model_dump(mode="json", exclude={"host_id", "reported_at", "report_id"}) | {
        "report_id": event.report_id,
        "reported_at": event.reported_at,
    }
    statement = insert(HOST_STATES).values(host_id=event.host_id, **values)
    await batch.execute(
        statement.on_conflict_do_update(
            index_elements=[HOST_STATES.c.host_id],
            set_={name: statement.excluded[name] for name in values},
            where=HOST_STATES.c.reported_at < statement.excluded.reported_at,
        )
    )


async def drift_detected(batch: Batch, env: Envelope, event: DriftDetected) -> None:
    seen = {
        "status": DriftStatus.OPEN.value,
        "database_id": event.database_id,
        "project_id": env.project_id,
        "repair": event.repair,
        "first_seen_at": env.occurred_at,
        "last_seen_at": env.occurred_at,
        "repaired_at": None,
        "resolved_at": None,
    }
    batch.insert(
        DRIFTS, {"host_id": event.host_id, "kind": event.kind.value, "object": event.object, **seen}, on_conflict=seen
    )
    detail = {"host_id": event.host_id, "kind": event.kind.value, "object": event.object, "repair": event.repair}
    _audit_drift(batch, env, event.database_id, "detected", detail)


async def drift_repaired(batch: Batch, env: Envelope, event: DriftRepaired) -> None:
    key = (event.host_id, event.kind.value, event.object)
    batch.update(DRIFTS, key, {"status": DriftStatus.REPAIRED.value, "repaired_at": env.occurred_at})
    detail = {"host_id": event.host_id, "kind": event.kind.value, "object": event.object}
    _audit_drift(batch, env, event.database_id, "repaired", detail)


async def drift_resolved(batch: Batch, env: Envelope, event: DriftResolved) -> None:
    key = (event.host_id, event.kind.value, event.object)
    batch.update(DRIFTS, key, {"status": DriftStatus.RESOLVED.value, "resolved_at": env.occurred_at})
    detail = {"host_id": event.host_id, "kind": event.kind.value, "object": event.object}
    _audit_drift(batch, env, event.database_id, "resolved", detail)


def _audit_drift(
    batch: Batch, env: Envelope, database_id: uuid.UUID | None, outcome: str, detail: dict[str, Any]
) -> None:
    """A drift about a tenant's database is in its project's log; an orphan in the platform's."""
    resource = ("database", database_id) if database_id else ("host", PLATFORM_PROJECT)
    _audit(batch, env, "host.drift", *resource, outcome, detail)


# --- the data host's WAL archive and base backups ------------------------------------------


async def wal_segment_archived(batch: Batch, env: Envelope, event: WalSegmentArchived) -> None:
    values = {"archived_at": event.archived_at, "size_bytes": event.size_bytes}
    batch.insert(WAL_SEGMENTS, {"host_id": event.host_id, "segment": event.segment, **values}, on_conflict=values)


async def base_backup_completed(batch: Batch, env: Envelope, event: BaseBackupCompleted) -> None:
    row = {
        "id": event.base_backup_id,
        "host_id": event.host_id,
        "start_segment": event.start_segment,
        "stop_segment": event.stop_segment,
        "started_at": event.started_at,
        "finished_at": event.finished_at,
        "size_bytes": event.size_bytes,
    }
    batch.insert(BASE_BACKUPS, row, on_conflict=())


async def base_backup_deleted(batch: Batch, env: Envelope, event: BaseBackupDeleted) -> None:
    batch.update(BASE_BACKUPS, event.base_backup_id, {"deleted": True})
    await batch.execute(
        sa.delete(WAL_SEGMENTS).where(
            WAL_SEGMENTS.c.host_id == event.host_id, WAL_SEGMENTS.c.segment < event.wal_kept_from
        )
    )


# --- operations: requested, then started, steps, and one ending -----------------------------


async def operation_requested(batch: Batch, env: Envelope, event: OperationRequested) -> None:
    if batch.operation(env.correlation_id) is not None:
        return
    operation = {
        "project_id": env.project_id,
        "database_id": event.database_id,
        "kind": event.kind.value,
        "status": OperationStatus.ACCEPTED.value,
        "backup_id": event.backup_id,
        "point_in_time": event.point_in_time,
        "actor": env.actor,
        "last_sequence": env.sequence,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
    }
    batch.insert_operation(env.correlation_id, operation, OperationState(env.sequence, event.backup_id))
    if event.kind is OperationKind.BACKUP and event.backup_id is not None:
        backup = {
            "id": event.backup_id,
            "project_id": env.project_id,
            "database_id": event.database_id,
            "status": BackupStatus.PENDING.value,
            "trigger": event.trigger,
            "object_key": event.object_key or _first_release_object_key(env.project_id, event),
            "operation_id": env.correlation_id,
            "created_at": env.occurred_at,
            "updated_at": env.occurred_at,
        }
        batch.insert(BACKUPS, backup)
    elif event.kind is OperationKind.DELETE_BACKUP:
        _set_backup(batch, env, event.backup_id, status=BackupStatus.DELETING)
    if event.kind in CREATES_DATABASE:
        database = {
            "id": event.database_id,
            "project_id": env.project_id,
            "name": event.name,
            "host_id": event.host_id,
            "dbname": event.dbname,
            "role": event.role,
            "status": BUSY[event.kind].value,
            "credentials_version": event.credentials_version,
            "last_operation_id": env.correlation_id,
            "created_at": env.occurred_at,
            "updated_at": env.occurred_at,
        }
        # a redriven create finds the row its dead-lettered attempt left ``failed``
        again = ("status", "credentials_version", "last_operation_id", "updated_at")
        batch.insert(DATABASES, database, on_conflict=again if event.retry_of else None)
    elif event.kind in BUSY:
        _set_database(batch, env, event, status=BUSY[event.kind])
    detail: dict[str, Any] = {"name": event.name, "trigger": event.trigger}
    if event.backup_id:
        detail["backup_id"] = str(event.backup_id)
    if event.retry_of:
        detail["retry_of"] = str(event.retry_of)
    _audit(batch, env, action(event.kind), "database", event.database_id, "requested", detail)


def _first_release_object_key(project_id: uuid.UUID, event: OperationRequested) -> str:
    """Backup requests recorded before events carried the object key used this layout."""
    return f"backups/{project_id}/{event.database_id}/{event.backup_id}.pgdump.enc"


async def operation_started(batch: Batch, env: Envelope, event: OperationStarted) -> None:
    if _advance(batch, env, status=OperationStatus.RUNNING) and event.kind is OperationKind.BACKUP:
        _set_backup(batch, env, None, status=BackupStatus.RUNNING)


async def step_completed(batch: Batch, env: Envelope, event: OperationStepCompleted) -> None:
    if _advance(batch, env):
        _step(batch, env, event.step, "completed", None)


async def step_failed(batch: Batch, env: Envelope, event: OperationStepFailed) -> None:
    if _advance(batch, env, error_detail=event.detail):
        _step(batch, env, event.step, "failed", event.reason)


async def step_compensated(batch: Batch, env: Envelope, event: OperationStepCompensated) -> None:
    if _advance(batch, env):
        _step(batch, env, event.step, "compensated", None)


async def operation_failed(batch: Batch, env: Envelope, event: OperationFailed) -> None:
    _ended_without_effect(batch, env, event, OperationStatus.FAILED, error_detail=event.detail)


async def operation_compensated(batch: Batch, env: Envelope, event: OperationCompensated) -> None:
    _ended_without_effect(batch, env, event, OperationStatus.COMPENSATED)


def _ended_without_effect(
    batch: Batch,
    env: Envelope,
    event: OperationFailed | OperationCompensated,
    status: OperationStatus,
    **details: str | None,
) -> None:
    if not _advance(batch, env, status=status, error=event.reason, **{k: v for k, v in details.items() if v}):
        return
    if event.kind in BUSY:
        after = (
            DatabaseStatus.FAILED
            if event.kind in CREATES_DATABASE
            else DatabaseStatus.SUSPENDED
            if event.kind is OperationKind.RESUME
            else DatabaseStatus.AVAILABLE
        )
        _set_database(batch, env, event, status=after)
    elif event.kind is OperationKind.BACKUP:
        _set_backup(batch, env, None, status=BackupStatus.FAILED, error=event.reason)
    elif event.kind is OperationKind.DELETE_BACKUP:
        _set_backup(batch, env, None, status=BackupStatus.COMPLETED)
    _audit(batch, env, action(event.kind), "database", event.database_id, status.value, {"reason": event.reason})
    ended = public.OperationFailed if status is OperationStatus.FAILED else public.OperationCompensated
    _publish(batch, env, ended(**_ids(env, event), kind=event.kind.value, reason=event.reason))
    backup = batch.operation(env.correlation_id)
    if event.kind is OperationKind.BACKUP and backup is not None and backup.backup_id is not None:
        _publish(batch, env, public.BackupFailed(**_ids(env, event), backup_id=backup.backup_id, reason=event.reason))


# --- success events: one per operation kind -----------------------------------------------


async def database_created(batch: Batch, env: Envelope, event: DatabaseCreated) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.AVAILABLE)
        _publish(batch, env, public.DatabaseCreated(**_ids(env, event)))


async def database_deleted(batch: Batch, env: Envelope, event: DatabaseDeleted) -> None:
    if _succeeded(batch, env, event):
        deleted_at = event.writes_ended_at or env.occurred_at
        _set_database(batch, env, event, status=DatabaseStatus.DELETED, deleted_at=deleted_at)
        _publish(batch, env, public.DatabaseDeleted(**_ids(env, event)))


async def database_reset(batch: Batch, env: Envelope, event: DatabaseReset) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.AVAILABLE)
        _publish(batch, env, public.DatabaseReset(**_ids(env, event)))


async def database_restored(batch: Batch, env: Envelope, event: DatabaseRestored) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.AVAILABLE)
        restored = public.DatabaseRestored(
            **_ids(env, event), backup_id=event.backup_id, point_in_time=event.point_in_time
        )
        _publish(batch, env, restored)


async def database_suspended(batch: Batch, env: Envelope, event: DatabaseSuspended) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.SUSPENDED)


async def database_resumed(batch: Batch, env: Envelope, event: DatabaseResumed) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.AVAILABLE)


async def credentials_rotated(batch: Batch, env: Envelope, event: CredentialsRotated) -> None:
    if _succeeded(batch, env, event):
        _set_database(batch, env, event, status=DatabaseStatus.AVAILABLE, credentials_version=event.credentials_version)
        rotated = public.DatabaseCredentialsRotated(**_ids(env, event), credentials_version=event.credentials_version)
        _publish(batch, env, rotated)


async def backup_completed(batch: Batch, env: Envelope, event: BackupCompleted) -> None:
    if _succeeded(batch, env, event):
        _set_backup(
            batch,
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
        completed = public.BackupCompleted(**_ids(env, event), backup_id=event.backup_id, size_bytes=event.size_bytes)
        _publish(batch, env, completed)


async def backup_verified(batch: Batch, env: Envelope, event: BackupVerified) -> None:
    if not _succeeded(batch, env, event):
        return
    _set_backup(
        batch,
        env,
        event.backup_id,
        last_verified_at=env.occurred_at,
        verify_duration_ms=event.duration_ms,
        verified_tables=event.tables,
    )
    verified = {"last_verified_backup_id": event.backup_id, "last_verified_restore_at": env.occurred_at}
    batch.update(DATABASES, event.database_id, verified)
    _publish(batch, env, public.BackupVerified(**_ids(env, event), backup_id=event.backup_id, tables=event.tables))


async def backup_deleted(batch: Batch, env: Envelope, event: BackupDeleted) -> None:
    if _succeeded(batch, env, event):
        _set_backup(batch, env, event.backup_id, status=BackupStatus.DELETED)
        _publish(batch, env, public.BackupDeleted(**_ids(env, event), backup_id=event.backup_id))


# --- the table ------------------------------------------------------------------------------

Projection = Callable[[Batch, Envelope, Any], Awaitable[None]]
PROJECTIONS: dict[type[Payload], Projection] = {
    ProjectCreated: project_created,
    ProjectDeleted: project_deleted,
    ProjectPlanChanged: project_plan_changed,
    OrganizationCreated: organization_created,
    OrganizationPlanChanged: organization_plan_changed,
    OrganizationSuspended: organization_suspended,
    OrganizationResumed: organization_resumed,
    MemberInvited: member_invited,
    InvitationRevoked: invitation_revoked,
    MemberAdded: member_added,
    MemberRoleChanged: member_role_changed,
    MemberRemoved: member_removed,
    ApiTokenCreated: api_token_created,
    ApiTokenRevoked: api_token_revoked,
    BackupPolicySet: backup_policy_set,
    CancelRequested: cancel_requested,
    RetryRequested: retry_requested,
    BackupDownloaded: backup_downloaded,
    CredentialsRead: credentials_read,
    BackupMissed: backup_missed,
    CommandRejected: command_rejected,
    VerifierDrifted: verifier_drifted,
    HostStateReported: host_state_reported,
    DriftDetected: drift_detected,
    DriftRepaired: drift_repaired,
    DriftResolved: drift_resolved,
    WebhookEndpointDisabled: webhook_endpoint_disabled,
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
    DatabaseSuspended: database_suspended,
    DatabaseResumed: database_resumed,
    BackupCompleted: backup_completed,
    BackupVerified: backup_verified,
    BackupDeleted: backup_deleted,
}
"""Every event type that changes the read model; any other type (WAL alerts) changes nothing."""
PUBLISHING = {
    WebhookEndpointDisabled,
    OperationFailed,
    OperationCompensated,
    DatabaseCreated,
    DatabaseDeleted,
    DatabaseReset,
    DatabaseRestored,
    DriftDetected,
    DriftRepaired,
    DriftResolved,
    HostStateReported,
    CredentialsRotated,
    BackupCompleted,
    BackupVerified,
    BackupDeleted,
}
"""The event types whose projections may publish public events."""
OPERATION_EVENTS = {event for event in PROJECTIONS if issubclass(event, OperationEvent)}
"""The event types that advance an operation (checked by exact type: ``isinstance`` on a model
class is slow, and every event's type is one of these classes, never a subclass)."""


async def apply(conn: AsyncConnection, env: Envelope) -> None:
    """Apply one event inside the caller's transaction."""
    await apply_events(conn, [env])


async def apply_events(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """Apply events, in order, inside the caller's transaction: a few statements for all of them."""
    batch = Batch(conn)
    events = [(env, env.payload()) for env in envelopes]
    await batch.load_operations(env.correlation_id for env, event in events if type(event) in OPERATION_EVENTS)
    await batch.load_event_sequences(env.project_id for env, event in events if type(event) in PUBLISHING)
    await batch.load_published(
        _public_id(env, public.WebhookEndpointDisabled)
        for env, event in events
        if type(event) is WebhookEndpointDisabled
    )
    for env, event in events:
        projection = PROJECTIONS.get(type(event))
        if projection is not None:
            await projection(batch, env, event)
    await batch.flush()


# --- shared pieces --------------------------------------------------------------------------


def _advance(batch: Batch, env: Envelope, **values: Any) -> bool:
    """Move the operation to this event (and ``values``); ``False`` for an event already applied."""
    operation = batch.operation(env.correlation_id)
    if operation is None or operation.last_sequence >= env.sequence:
        return False
    operation.last_sequence = env.sequence
    values = {k: v.value if type(v) is OperationStatus else v for k, v in values.items()}
    batch.advance_operation(
        env.correlation_id, {"last_sequence": env.sequence, "updated_at": env.occurred_at, **values}
    )
    return True


def _succeeded(batch: Batch, env: Envelope, event: OperationEvent) -> bool:
    """The operation succeeded (audited); ``False`` for an event already applied."""
    if not _advance(batch, env, status=OperationStatus.SUCCEEDED):
        return False
    _audit(batch, env, action(event.kind), "database", event.database_id, "succeeded", {})
    return True


def _set_backup(batch: Batch, env: Envelope, backup_id: uuid.UUID | None, **values: Any) -> None:
    """Update a backup by id, or (``backup_id=None``) the one the operation is about."""
    if "status" in values:
        values["status"] = values["status"].value
    if backup_id is None:
        operation = batch.operation(env.correlation_id)
        backup_id = operation.backup_id if operation else None
    if backup_id is not None:
        batch.update(BACKUPS, backup_id, {"updated_at": env.occurred_at, **values})


def _step(batch: Batch, env: Envelope, name: str, status: str, detail: str | None) -> None:
    values = {"status": status, "detail": detail, "updated_at": env.occurred_at}
    row = {"operation_id": env.correlation_id, "name": name, "position": env.sequence, **values}
    batch.insert(STEPS, row, on_conflict=values)


def _set_database(batch: Batch, env: Envelope, event: OperationEvent, *, status: DatabaseStatus, **values: Any) -> None:
    values = {"status": status.value, "last_operation_id": env.correlation_id, "updated_at": env.occurred_at, **values}
    batch.update(DATABASES, event.database_id, values)


def _ids(env: Envelope, event: OperationEvent) -> dict[str, uuid.UUID]:
    return {"project_id": env.project_id, "database_id": event.database_id, "operation_id": env.correlation_id}


def _public_id(env: Envelope, data: public.PublicData | type[public.PublicData]) -> uuid.UUID:
    """A public event's id follows from the internal event's (one internal event may make two)."""
    return uuid.uuid5(env.id, data.TYPE)


def _publish(batch: Batch, env: Envelope, data: public.PublicData) -> None:
    """The project's next public event, made of ``data``, in the trace of the event it comes from."""
    row = {
        "project_id": env.project_id,
        "sequence": batch.next_event_sequence(env.project_id),
        "id": _public_id(env, data),
        "type": data.TYPE,
        "subject": data.subject(),
        "time": env.occurred_at,
        "data": data.model_dump(mode="json"),
        "traceparent": env.traceparent,
    }
    batch.insert(EVENTS, row)


def _audit(
    batch: Batch,
    env: Envelope,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    operation_id = env.correlation_id if env.sequence or env.type == OperationRequested.TYPE else None
    row = {
        "id": env.id,
        "project_id": env.project_id,
        "occurred_at": env.occurred_at,
        "actor": env.actor,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "operation_id": operation_id,
        "outcome": outcome,
        "detail": detail,
    }
    batch.insert(AUDIT, row, on_conflict=())
