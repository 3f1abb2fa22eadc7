"""Events: facts in the past tense, published to the events stream for every subscriber."""

from __future__ import annotations

import uuid

from pydantic import AwareDatetime, Field

from schemas.commands import OperationKind
from schemas.envelope import Payload


class ProjectCreated(Payload):
    TYPE = "pgplane.project.created"
    name: str
    plan: str


class ApiTokenCreated(Payload):
    TYPE = "pgplane.api_token.created"
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


class OperationFailed(OperationEvent):
    """The operation ended without effect it could undo; ``reason`` says why."""

    TYPE = "pgplane.operation.failed"
    reason: str
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


class DatabaseReset(OperationEvent):
    TYPE = "pgplane.database.reset"


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
    backup_id: uuid.UUID


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


class BackupDownloaded(Payload):
    """Someone took the decrypted dump out through the API."""

    TYPE = "pgplane.backup.downloaded"
    database_id: uuid.UUID
    backup_id: uuid.UUID


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
}
"""The success event of each operation kind."""
