"""The public event contract: what a tenant's subscribers see (the events API, its stream and,
later, webhooks), as opposed to the internal envelopes on the bus.

Each public event is CloudEvents 1.0 JSON plus ``sequence``, a number that grows by one per
event of the project. Payloads are thin: ids, status, the operation, never a secret. The
projector derives them from the internal events it applies (``readmodel.public_events``).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class EventType(StrEnum):
    DATABASE_CREATED = "database.created"
    DATABASE_DELETED = "database.deleted"
    DATABASE_RESET = "database.reset"
    DATABASE_CREDENTIALS_ROTATED = "database.credentials_rotated"
    DATABASE_RESTORED = "database.restored"
    BACKUP_COMPLETED = "backup.completed"
    BACKUP_FAILED = "backup.failed"
    BACKUP_VERIFIED = "backup.verified"
    BACKUP_DELETED = "backup.deleted"
    OPERATION_FAILED = "operation.failed"
    OPERATION_COMPENSATED = "operation.compensated"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"
    WEBHOOK_TEST = "webhook.test"


class PublicData(BaseModel):
    """Base of every public event's ``data``; ``TYPE`` names it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    TYPE: ClassVar[EventType]
    SUBJECT: ClassVar[str] = "databases/{database_id}"
    REGISTRY: ClassVar[dict[EventType, type[PublicData]]] = {}

    project_id: uuid.UUID

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            PublicData.REGISTRY[cls.TYPE] = cls

    def subject(self) -> str:
        return self.SUBJECT.format(**self.model_dump())


class DatabaseEvent(PublicData):
    """An outcome of an operation on a database."""

    database_id: uuid.UUID
    operation_id: uuid.UUID


class DatabaseCreated(DatabaseEvent):
    """A database is ready: its credentials can be read and it takes connections."""

    TYPE = EventType.DATABASE_CREATED


class DatabaseDeleted(DatabaseEvent):
    TYPE = EventType.DATABASE_DELETED


class DatabaseReset(DatabaseEvent):
    """The database was emptied; its name, credentials and connection string are unchanged."""

    TYPE = EventType.DATABASE_RESET


class DatabaseCredentialsRotated(DatabaseEvent):
    """A new password is in effect; read it from the credentials endpoint."""

    TYPE = EventType.DATABASE_CREDENTIALS_ROTATED
    credentials_version: int


class DatabaseRestored(DatabaseEvent):
    """The database holds a backup's contents (``backup_id``) or its state at ``point_in_time``."""

    TYPE = EventType.DATABASE_RESTORED
    backup_id: uuid.UUID | None = None
    point_in_time: AwareDatetime | None = None


class BackupEvent(DatabaseEvent):
    SUBJECT = "backups/{backup_id}"
    backup_id: uuid.UUID


class BackupCompleted(BackupEvent):
    """The backup is stored whole; it can be restored, verified and downloaded."""

    TYPE = EventType.BACKUP_COMPLETED
    size_bytes: int


class BackupFailed(BackupEvent):
    """Nothing was stored; ``reason`` says why."""

    TYPE = EventType.BACKUP_FAILED
    reason: str


class BackupVerified(BackupEvent):
    """The backup was restored into a scratch database and read back."""

    TYPE = EventType.BACKUP_VERIFIED
    tables: int


class BackupDeleted(BackupEvent):
    TYPE = EventType.BACKUP_DELETED


class OperationEnded(DatabaseEvent):
    SUBJECT = "operations/{operation_id}"
    kind: str
    """The operation's kind, as in ``GET /operations/{id}``."""
    reason: str


class OperationFailed(OperationEnded):
    """The operation did not do what was asked; nothing it started is left half done."""

    TYPE = EventType.OPERATION_FAILED


class OperationCompensated(OperationEnded):
    """The operation was undone (cancelled, or a step failed and the earlier ones were reversed)."""

    TYPE = EventType.OPERATION_COMPENSATED


class WebhookEndpointDisabled(PublicData):
    """Deliveries to the endpoint stopped: it answered 410 Gone, or failed for days (``reason``).
    Enable it again with ``PATCH /webhooks/{id}``; what it missed is sent then."""

    TYPE = EventType.WEBHOOK_ENDPOINT_DISABLED
    SUBJECT = "webhooks/{endpoint_id}"
    endpoint_id: uuid.UUID
    reason: str


class WebhookTest(PublicData):
    """Sent on request to one endpoint (``POST /webhooks/{id}/test``), never to others."""

    TYPE = EventType.WEBHOOK_TEST
    SUBJECT = "webhooks/{endpoint_id}"
    endpoint_id: uuid.UUID


class PublicEvent(BaseModel):
    """One event as subscribers receive it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID
    type: EventType
    source: str = Field(description="The project the event belongs to: ``/projects/<id>``.")
    subject: str = Field(description="The resource: ``databases/<id>``, ``backups/<id>`` or ``operations/<id>``.")
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    sequence: int = Field(ge=1, description="Grows by one per event of the project; the events API's cursor.")
    data: dict[str, Any]


def source(project_id: uuid.UUID) -> str:
    return f"/projects/{project_id}"


def from_row(row: Any) -> PublicEvent:
    """A stored public event (a row of the ``events`` table) as subscribers receive it."""
    return PublicEvent(
        id=row.id,
        type=row.type,
        source=source(row.project_id),
        subject=row.subject,
        time=row.time,
        sequence=row.sequence,
        data=row.data,
    )
