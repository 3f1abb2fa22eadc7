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
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"
    """The create did not finish; nothing of it is left on the host."""


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
    created_at: datetime = Field(sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class Operation(SQLModel, table=True):
    __tablename__ = "operations"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    database_id: uuid.UUID = Field(index=True)
    kind: str
    status: str
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


def table(model: type[SQLModel]) -> sa.Table:
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


PROJECTS, DATABASES, OPERATIONS, STEPS, AUDIT, CHECKPOINTS = (
    table(m) for m in (Project, Database, Operation, OperationStep, AuditEntry, ProjectorCheckpoint)
)
TOKENS, CREDENTIALS, IDEMPOTENCY, OUTBOX = (
    table(m) for m in (ApiToken, DatabaseCredential, IdempotencyKey, OutboxMessage)
)
READ_MODEL = [PROJECTS, DATABASES, OPERATIONS, STEPS, AUDIT]
"""The projected tables: `pgplane replay projection` rebuilds and compares exactly these."""
