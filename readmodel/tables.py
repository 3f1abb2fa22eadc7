"""The read model: tables written only by applying events (``readmodel.projection``), so
replaying the events stream into an empty schema rebuilds them exactly. The API reads them
and, for read-your-writes, applies the events it makes itself; the projector applies the rest."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from infra.metadata.tables import ORGANIZATIONS, TZ, table


class DatabaseStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    RESETTING = "resetting"
    ROTATING = "rotating"
    RESTORING = "restoring"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    """Its organization is suspended: logins are refused, the data stays."""
    RESUMING = "resuming"
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
OPERATION_ENDED_CHANNEL = "pgplane_operation_ended"
"""The projector notifies an operation's id here (``pg_notify``, sent at its commit) when it ends."""


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    id: uuid.UUID = Field(primary_key=True)
    name: str
    plan: str
    organization_id: uuid.UUID | None = Field(default=None, index=True)
    """The organisation that owns it (``None``: made by an operator outside any organisation)."""
    created_at: datetime = Field(sa_type=TZ)
    deleted_at: datetime | None = Field(default=None, sa_type=TZ)


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
    deleted_at: datetime | None = Field(default=None, sa_type=TZ)
    """When a deleted database stopped taking writes; its restore window ends there."""


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
    """What went wrong, in product terms."""
    error_detail: str | None = None
    """What operators need to know (addresses, physical names, a tool's own words): admins only."""
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


class ProjectEvent(SQLModel, table=True):
    """A project's public events (``schemas.public_events``), numbered in the order they happened."""

    __tablename__ = "events"
    project_id: uuid.UUID = Field(primary_key=True)
    sequence: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    id: uuid.UUID = Field(unique=True)
    type: str
    subject: str
    time: datetime = Field(sa_type=TZ)
    data: dict[str, Any] = Field(sa_type=JSONB)
    traceparent: str | None = None
    """The W3C trace context of the request that caused the event (webhook deliveries join its trace)."""


class EventSequence(SQLModel, table=True):
    """The last public event number given out per project."""

    __tablename__ = "event_sequences"
    project_id: uuid.UUID = Field(primary_key=True)
    last_sequence: int = Field(sa_type=sa.BigInteger)


class HostState(SQLModel, table=True):
    """What a data host last reported it actually holds (``HostStateReported``)."""

    __tablename__ = "host_states"
    host_id: str = Field(primary_key=True)
    report_id: uuid.UUID
    reported_at: datetime = Field(sa_type=TZ)
    wal_lsn: str | None = None
    databases: list[dict[str, Any]] = Field(sa_type=JSONB)
    """Every tenant database on the host: ``dbname``, ``owner``, ``size_bytes``."""
    roles: list[str] = Field(sa_type=JSONB)
    routes: list[str] = Field(sa_type=JSONB)
    """The databases PgBouncer routes."""
    verifier_mismatch: list[str] = Field(sa_type=JSONB)
    """Roles whose password PostgreSQL holds differs from the one pgplane gave them."""


class DriftStatus(StrEnum):
    OPEN = "open"
    REPAIRED = "repaired"
    RESOLVED = "resolved"


class Drift(SQLModel, table=True):
    """A difference between the read model and what a data host holds, until it goes away."""

    __tablename__ = "drifts"
    host_id: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    object: str = Field(primary_key=True)
    """The physical name the drift is about (a database or a role)."""
    database_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    status: str
    repair: bool
    """Whether pgplane repairs this kind by itself (the rest wait for an operator)."""
    first_seen_at: datetime = Field(sa_type=TZ)
    last_seen_at: datetime = Field(sa_type=TZ)
    repaired_at: datetime | None = Field(default=None, sa_type=TZ)
    resolved_at: datetime | None = Field(default=None, sa_type=TZ)


class ProjectorCheckpoint(SQLModel, table=True):
    __tablename__ = "projector_checkpoint"
    name: str = Field(primary_key=True)
    last_sequence: int


PROJECTS, DATABASES, BACKUPS, POLICIES, OPERATIONS, STEPS, AUDIT, CHECKPOINTS = (
    table(m)
    for m in (Project, Database, Backup, BackupPolicy, Operation, OperationStep, AuditEntry, ProjectorCheckpoint)
)
BASE_BACKUPS, WAL_SEGMENTS = table(HostBaseBackup), table(WalSegment)
EVENTS, EVENT_SEQUENCES = table(ProjectEvent), table(EventSequence)
HOST_STATES, DRIFTS = table(HostState), table(Drift)
READ_MODEL = [
    PROJECTS,
    DATABASES,
    BACKUPS,
    POLICIES,
    OPERATIONS,
    STEPS,
    AUDIT,
    BASE_BACKUPS,
    WAL_SEGMENTS,
    EVENTS,
    EVENT_SEQUENCES,
    HOST_STATES,
    DRIFTS,
]
"""The projected tables: `pgplane replay projection` rebuilds and compares exactly these."""


def project_plan() -> sa.Label[str]:
    """A project's plan, what every limit reads: its organization's, or (outside any) its own."""
    owner = sa.select(ORGANIZATIONS.c.plan).where(ORGANIZATIONS.c.id == PROJECTS.c.organization_id)
    return sa.func.coalesce(owner.scalar_subquery(), PROJECTS.c.plan).label("plan")


def projects_with_plan() -> sa.Select[Any]:
    """``SELECT * FROM projects``, with the plan each one has (``project_plan``)."""
    return sa.select(*(project_plan() if column.name == "plan" else column for column in PROJECTS.c))


async def create_tables(conn: AsyncConnection, schema: str) -> None:
    """The read model and its checkpoint in a new, empty ``schema`` (where a replay rebuilds)."""
    await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    conn = await conn.execution_options(schema_translate_map={None: schema})
    await conn.run_sync(lambda sync: SQLModel.metadata.create_all(sync, tables=[*READ_MODEL, CHECKPOINTS]))
