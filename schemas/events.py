"""Events: facts in the past tense, published to the events stream for every subscriber."""

from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.commands import DriftKind, OperationKind
from schemas.envelope import Payload


class ProjectCreated(Payload):
    TYPE = "pgplane.project.created"
    name: str
    plan: str
    organization_id: uuid.UUID | None = Field(default=None, exclude_if=lambda value: value is None)
    """Absent for a project made by an operator outside any organisation."""


class OrganizationCreated(Payload):
    """Organisation events carry the organisation's id where others carry the project's: it is the
    scope their audit entries are filed under."""

    TYPE = "pgplane.organization.created"
    name: str
    owner: uuid.UUID


class OrganizationPlanChanged(Payload):
    """The organization's projects are entitled to ``plan`` from now on."""

    TYPE = "pgplane.organization.plan_changed"
    plan: str
    previous: str


class OrganizationSuspended(Payload):
    """Its databases are being suspended: logins refused, data kept."""

    TYPE = "pgplane.organization.suspended"
    reason: str


class OrganizationResumed(Payload):
    TYPE = "pgplane.organization.resumed"


class MemberInvited(Payload):
    TYPE = "pgplane.organization.member_invited"
    invitation_id: uuid.UUID
    email: str
    role: str


class InvitationRevoked(Payload):
    TYPE = "pgplane.organization.invitation_revoked"
    invitation_id: uuid.UUID
    email: str


class MemberAdded(Payload):
    TYPE = "pgplane.organization.member_added"
    user_id: uuid.UUID
    role: str
    invitation_id: uuid.UUID | None = None


class MemberRoleChanged(Payload):
    TYPE = "pgplane.organization.member_role_changed"
    user_id: uuid.UUID
    role: str
    previous: str


class MemberRemoved(Payload):
    TYPE = "pgplane.organization.member_removed"
    user_id: uuid.UUID
    role: str


class ProjectPlanChanged(Payload):
    """An administrator moved the project to another plan; its entitlements apply at once."""

    TYPE = "pgplane.project.plan_changed"
    plan: str
    previous: str


class ProjectDeleted(Payload):
    TYPE = "pgplane.project.deleted"
    name: str


class ApiTokenCreated(Payload):
    TYPE = "pgplane.api_token.created"
    token_id: uuid.UUID
    name: str


class ApiTokenRevoked(Payload):
    TYPE = "pgplane.api_token.revoked"
    token_id: uuid.UUID
    name: str


class OperationEvent(Payload):
    """Every saga event names its operation kind and database."""

    kind: OperationKind
    database_id: uuid.UUID


class OperationRequested(OperationEvent):
    """Accepted by the API; the command is on its way to ``host_id``."""

    TYPE = "pgplane.operation.requested"
    name: str
    host_id: str
    dbname: str
    role: str
    credentials_version: int
    requested_at: AwareDatetime
    backup_id: uuid.UUID | None = None
    """The backup made, restored, verified or deleted by a backup operation."""
    trigger: str = "api"
    """``api``, ``schedule`` or ``retention``: who asked."""
    point_in_time: AwareDatetime | None = None
    """The moment a point-in-time restore brings the database back to."""
    object_key: str | None = None
    """Where a backup operation stores the backup."""
    retry_of: uuid.UUID | None = None
    """An operator ran a dead-lettered operation's command again as this new operation."""


class OperationStarted(OperationEvent):
    TYPE = "pgplane.operation.started"


class OperationStepCompleted(OperationEvent):
    TYPE = "pgplane.operation.step_completed"
    step: str
    outputs: dict[str, str | int] = Field(default_factory=dict)
    """What the step produced that later steps or the success event need (never a secret)."""


class OperationStepCompensated(OperationEvent):
    """A completed step was undone because a later one failed."""

    TYPE = "pgplane.operation.step_compensated"
    step: str


class OperationStepFailed(OperationEvent):
    """A step failed in a way retrying cannot fix; compensation follows."""

    TYPE = "pgplane.operation.step_failed"
    step: str
    reason: str
    """In product terms: what tenants read."""
    detail: str | None = None
    """What operators need (addresses, physical names, a tool's own words); never shown to tenants."""
    ends_failed: bool = False
    """The operation ends ``failed`` rather than ``compensated`` (a deadline passed) once undone."""


class OperationFailed(OperationEvent):
    """The operation ended without effect it could undo; ``reason`` says why."""

    TYPE = "pgplane.operation.failed"
    reason: str
    detail: str | None = None
    """What operators need; never shown to tenants."""
    dead_lettered: bool = False


class OperationCompensated(OperationEvent):
    """A step failed permanently and every completed step was undone."""

    TYPE = "pgplane.operation.compensated"
    reason: str
    failed_step: str


class DatabaseCreated(OperationEvent):
    TYPE = "pgplane.database.created"


class DatabaseDeleted(OperationEvent):
    TYPE = "pgplane.database.deleted"
    writes_ended_at: AwareDatetime | None = None
    """When its route was removed and its sessions ended: nothing wrote to it after this moment."""


class DatabaseReset(OperationEvent):
    TYPE = "pgplane.database.reset"


class DatabaseSuspended(OperationEvent):
    TYPE = "pgplane.database.suspended"


class DatabaseResumed(OperationEvent):
    TYPE = "pgplane.database.resumed"


class CredentialsRotated(OperationEvent):
    TYPE = "pgplane.database.credentials_rotated"
    credentials_version: int


class BackupCompleted(OperationEvent):
    TYPE = "pgplane.backup.completed"
    backup_id: uuid.UUID
    object_key: str
    size_bytes: int
    dump_bytes: int
    sha256: str
    key_id: str
    duration_ms: int


class DatabaseRestored(OperationEvent):
    TYPE = "pgplane.database.restored"
    backup_id: uuid.UUID | None = None
    point_in_time: AwareDatetime | None = None


class BackupVerified(OperationEvent):
    """A restore drill passed: the backup restored into a scratch database that was then dropped."""

    TYPE = "pgplane.backup.verified"
    backup_id: uuid.UUID
    duration_ms: int
    tables: int


class BackupDeleted(OperationEvent):
    TYPE = "pgplane.backup.deleted"
    backup_id: uuid.UUID
    reason: str


class CredentialsRead(Payload):
    """Someone read a database's password through the API."""

    TYPE = "pgplane.database.credentials_read"
    database_id: uuid.UUID
    credentials_version: int


class BackupDownloaded(Payload):
    """Someone took the decrypted dump out through the API."""

    TYPE = "pgplane.backup.downloaded"
    database_id: uuid.UUID
    backup_id: uuid.UUID


class CancelRequested(Payload):
    """Someone asked to stop a running operation; it ends ``compensated`` if it could be stopped."""

    TYPE = "pgplane.operation.cancel_requested"
    database_id: uuid.UUID
    operation_id: uuid.UUID


class RetryRequested(Payload):
    """An operator sent a stuck operation's command to its host again (it resumes where it stopped)."""

    TYPE = "pgplane.operation.retry_requested"
    database_id: uuid.UUID
    operation_id: uuid.UUID


class BackupPolicySet(Payload):
    TYPE = "pgplane.backup.policy_set"
    database_id: uuid.UUID
    schedule: str | None
    """``daily`` or a cron expression (UTC); ``None`` turns scheduled backups off."""
    retain_days: int
    keep_last: int


class BackupMissed(Payload):
    """A scheduled slot passed without a completed backup."""

    TYPE = "pgplane.backup.missed"
    database_id: uuid.UUID
    slot: AwareDatetime
    reason: str


PLATFORM_PROJECT = uuid.UUID(int=0)
"""The ``project_id`` of host events, which belong to no tenant."""


class CommandRejected(Payload):
    """An agent refused a command it cannot trust or read (unsigned, forged, altered, misdirected,
    malformed); it went to the dead letters and changed nothing."""

    TYPE = "pgplane.command.rejected"
    host_id: str
    subject: str
    stream_sequence: int
    reason: str


class WebhookEndpointDisabled(Payload):
    """The dispatcher gave up on an endpoint (it answered 410, or failed for days)."""

    TYPE = "pgplane.webhook.endpoint_disabled"
    endpoint_id: uuid.UUID
    reason: str


class VerifierDrifted(Payload):
    """A tenant changed its own password in SQL (reported by releases before the reconciler;
    kept so their streams replay: it is ``DriftDetected`` with ``verifier_changed`` now)."""

    TYPE = "pgplane.database.verifier_drifted"
    host_id: str
    database_id: uuid.UUID
    dbname: str


class WalSegmentArchived(Payload):
    TYPE = "pgplane.wal.segment_archived"
    host_id: str
    segment: str
    size_bytes: int
    archived_at: AwareDatetime


class WalArchiveFailed(Payload):
    TYPE = "pgplane.wal.archive_failed"
    host_id: str
    segment: str
    reason: str


class WalArchiveLagging(Payload):
    """Segments wait in the spool longer than the alert threshold."""

    TYPE = "pgplane.wal.archive_lagging"
    host_id: str
    pending_segments: int
    oldest_pending_seconds: int


class BaseBackupCompleted(Payload):
    TYPE = "pgplane.base_backup.completed"
    host_id: str
    base_backup_id: uuid.UUID
    start_segment: str
    stop_segment: str
    started_at: AwareDatetime
    finished_at: AwareDatetime
    size_bytes: int


class BaseBackupDeleted(Payload):
    """Retention removed a base backup and the WAL only it needed (segments before ``wal_kept_from``)."""

    TYPE = "pgplane.base_backup.deleted"
    host_id: str
    base_backup_id: uuid.UUID
    wal_kept_from: str


SUCCEEDED: dict[OperationKind, type[OperationEvent]] = {
    OperationKind.CREATE: DatabaseCreated,
    OperationKind.DELETE: DatabaseDeleted,
    OperationKind.RESET: DatabaseReset,
    OperationKind.ROTATE_CREDENTIALS: CredentialsRotated,
    OperationKind.BACKUP: BackupCompleted,
    OperationKind.RESTORE: DatabaseRestored,
    OperationKind.RESTORE_NEW_DATABASE: DatabaseRestored,
    OperationKind.VERIFY_BACKUP: BackupVerified,
    OperationKind.DELETE_BACKUP: BackupDeleted,
    OperationKind.PITR_RESTORE: DatabaseRestored,
    OperationKind.PITR_RESTORE_NEW_DATABASE: DatabaseRestored,
    OperationKind.SUSPEND: DatabaseSuspended,
    OperationKind.RESUME: DatabaseResumed,
}
"""The success event of each operation kind."""


class HostDatabase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    dbname: str
    owner: str
    size_bytes: int


class HostStateReported(Payload):
    """What a data host actually holds, reported by its agent at start and on a schedule: its
    tenant databases and roles, what PgBouncer routes, the roles whose password is not the one
    pgplane gave them, and its WAL position."""

    TYPE = "pgplane.host.state_reported"
    host_id: str
    report_id: uuid.UUID
    reported_at: AwareDatetime
    wal_lsn: str | None
    databases: list[HostDatabase]
    roles: list[str]
    routes: list[str]
    verifier_mismatch: list[str]


class DriftDetected(Payload):
    """The reconciler found a data host differing from the read model (once per drift while it lasts)."""

    TYPE = "pgplane.drift.detected"
    host_id: str
    kind: DriftKind
    object: str
    """The database or role the drift is about (physical name)."""
    database_id: uuid.UUID | None = None
    repair: bool
    """Whether pgplane repairs it; the rest wait for an operator (nothing is ever dropped)."""
    report_id: uuid.UUID


class DriftRepaired(Payload):
    """The agent put back what pgplane gave a database."""

    TYPE = "pgplane.drift.repaired"
    host_id: str
    kind: DriftKind
    object: str
    database_id: uuid.UUID


class DriftResolved(Payload):
    """A drift is no longer on the host (someone put it right, or its database went away)."""

    TYPE = "pgplane.drift.resolved"
    host_id: str
    kind: DriftKind
    object: str
    database_id: uuid.UUID | None = None
