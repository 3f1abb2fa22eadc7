"""Metadata tables. Read-model tables are written only from events (see ``consumers.projector``),
so replaying the events stream into an empty schema rebuilds them exactly."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

TZ = sa.DateTime(timezone=True)


class DatabaseStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    RESETTING = "resetting"
    ROTATING = "rotating"
    RESTORING = "restoring"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"
    """The create (or restore into a new database) did not finish; nothing of it is left on the host."""


class BackupStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    """The object is stored whole; only now can it be restored, verified or downloaded."""
    FAILED = "failed"
    """Nothing was stored (a partial upload is always removed)."""
    DELETING = "deleting"
    DELETED = "deleted"


class OperationStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"


GONE = (DatabaseStatus.DELETED.value, DatabaseStatus.FAILED.value)
IN_FLIGHT = (OperationStatus.ACCEPTED.value, OperationStatus.RUNNING.value)


# --- read model (projected from events) -------------------------------------------------


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    id: uuid.UUID = Field(primary_key=True)
    name: str
    plan: str
    created_at: datetime = Field(sa_type=TZ)


class Database(SQLModel, table=True):
    __tablename__ = "databases"
    __table_args__ = (
        sa.Index(
            "databases_live_name",
            "project_id",
            "name",
            unique=True,
            postgresql_where=sa.text("status NOT IN ('deleted', 'failed')"),
        ),
    )
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    name: str
    host_id: str
    dbname: str
    role: str
    status: str
    credentials_version: int
    last_operation_id: uuid.UUID
    last_verified_backup_id: uuid.UUID | None = None
    last_verified_restore_at: datetime | None = Field(default=None, sa_type=TZ)
    created_at: datetime = Field(sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class Backup(SQLModel, table=True):
    __tablename__ = "backups"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    database_id: uuid.UUID = Field(index=True)
    status: str
    trigger: str
    object_key: str
    operation_id: uuid.UUID
    size_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    dump_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    sha256: str | None = None
    key_id: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    last_verified_at: datetime | None = Field(default=None, sa_type=TZ)
    verify_duration_ms: int | None = None
    verified_tables: int | None = None
    created_at: datetime = Field(sa_type=TZ)
    completed_at: datetime | None = Field(default=None, sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class BackupPolicy(SQLModel, table=True):
    __tablename__ = "backup_policies"
    database_id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    schedule: str | None = None
    retain_days: int
    keep_last: int
    updated_at: datetime = Field(sa_type=TZ)


class HostBaseBackup(SQLModel, table=True):
    """A data host's base backups (whole cluster), where point-in-time restores start."""

    __tablename__ = "base_backups"
    id: uuid.UUID = Field(primary_key=True)
    host_id: str = Field(index=True)
    start_segment: str
    stop_segment: str
    started_at: datetime = Field(sa_type=TZ)
    finished_at: datetime = Field(sa_type=TZ)
    size_bytes: int = Field(sa_type=sa.BigInteger)
    deleted: bool = False


class WalSegment(SQLModel, table=True):
    """A WAL segment archived from a data host; the restore window is read from these."""

    __tablename__ = "wal_segments"
    host_id: str = Field(primary_key=True)
    segment: str = Field(primary_key=True)
    archived_at: datetime = Field(sa_type=TZ)
    size_bytes: int = Field(sa_type=sa.BigInteger)


class Operation(SQLModel, table=True):
    __tablename__ = "operations"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    database_id: uuid.UUID = Field(index=True)
    kind: str
    status: str
    backup_id: uuid.UUID | None = None
    point_in_time: datetime | None = Field(default=None, sa_type=TZ)
    error: str | None = None
    actor: str
    last_sequence: int
    created_at: datetime = Field(sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class OperationStep(SQLModel, table=True):
    __tablename__ = "operation_steps"
    operation_id: uuid.UUID = Field(primary_key=True)
    name: str = Field(primary_key=True)
    status: str
    position: int
    detail: str | None = None
    updated_at: datetime = Field(sa_type=TZ)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    occurred_at: datetime = Field(sa_type=TZ)
    actor: str
    action: str
    resource_type: str
    resource_id: uuid.UUID
    operation_id: uuid.UUID | None = None
    outcome: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


class ProjectorCheckpoint(SQLModel, table=True):
    __tablename__ = "projector_checkpoint"
    name: str = Field(primary_key=True)
    last_sequence: int


# --- write side (API only) ----------------------------------------------------------------


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    name: str
    secret_digest: str
    created_at: datetime = Field(sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)


class DatabaseCredential(SQLModel, table=True):
    """Tenant passwords, AES-GCM encrypted; the read model says which version is live."""

    __tablename__ = "database_credentials"
    database_id: uuid.UUID = Field(primary_key=True)
    version: int = Field(primary_key=True)
    password_encrypted: bytes
    created_at: datetime = Field(sa_type=TZ)


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    principal: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    request_digest: str
    status_code: int
    response: dict[str, Any] = Field(sa_type=JSONB)
    created_at: datetime = Field(sa_type=TZ, index=True)


class OutboxMessage(SQLModel, table=True):
    """Messages accepted in the same transaction as the request, published after commit."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    msg_id: str
    subject: str
    stream: str
    payload: bytes
    created_at: datetime = Field(sa_type=TZ)
    published_at: datetime | None = Field(default=None, sa_type=TZ, index=True)


class BackupSlot(SQLModel, table=True):
    """Scheduler bookkeeping: one row per (database, slot) claimed, whichever replica got there first."""

    __tablename__ = "backup_slots"
    database_id: uuid.UUID = Field(primary_key=True)
    slot: datetime = Field(primary_key=True, sa_type=TZ)
    operation_id: uuid.UUID | None = None
    missed_at: datetime | None = Field(default=None, sa_type=TZ)


def table(model: type[SQLModel]) -> sa.Table:
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


PROJECTS, DATABASES, BACKUPS, POLICIES, OPERATIONS, STEPS, AUDIT, CHECKPOINTS = (
    table(m)
    for m in (Project, Database, Backup, BackupPolicy, Operation, OperationStep, AuditEntry, ProjectorCheckpoint)
)
BASE_BACKUPS, WAL_SEGMENTS = table(HostBaseBackup), table(WalSegment)
TOKENS, CREDENTIALS, IDEMPOTENCY, OUTBOX, SLOTS = (
    table(m) for m in (ApiToken, DatabaseCredential, IdempotencyKey, OutboxMessage, BackupSlot)
)
READ_MODEL = [PROJECTS, DATABASES, BACKUPS, POLICIES, OPERATIONS, STEPS, AUDIT, BASE_BACKUPS, WAL_SEGMENTS]
"""The projected tables: `pgplane replay projection` rebuilds and compares exactly these."""
