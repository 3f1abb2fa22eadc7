"""Metadata tables the API and the producers write directly (never from events): API tokens,
encrypted tenant passwords, idempotency keys, the outbox, the scheduler's claimed slots, and
webhook endpoints with their deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

TZ = sa.DateTime(timezone=True)


def table(model: type[SQLModel]) -> sa.Table:
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    name: str
    secret_digest: str
    created_at: datetime = Field(sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    expires_at: datetime | None = Field(default=None, sa_type=TZ)
    last_used_at: datetime | None = Field(default=None, sa_type=TZ)
    scopes: list[str] = Field(sa_type=JSONB)


class AuthFailure(SQLModel, table=True):
    """Wrong credentials per client address in the current window: past the limit, a 429."""

    __tablename__ = "auth_failures"
    client: str = Field(primary_key=True)
    window_started: datetime = Field(sa_type=TZ)
    failures: int


class RateWindow(SQLModel, table=True):
    """Requests per key (``token:<id>``, ``project:<id>``) in its current one-minute window, shared
    by every API process: past the plan's rate, a 429."""

    __tablename__ = "rate_windows"
    key: str = Field(primary_key=True)
    window_started: datetime = Field(sa_type=TZ)
    used: int


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


class WebhookEndpoint(SQLModel, table=True):
    """Where a project's public events are sent; ``last_sequence`` is how far they were queued."""

    __tablename__ = "webhook_endpoints"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    url: str
    description: str | None = None
    event_types: list[str] = Field(default_factory=list, sa_type=JSONB)
    """Empty: every type."""
    status: str
    disabled_reason: str | None = None
    secret_encrypted: bytes
    previous_secret_encrypted: bytes | None = None
    previous_secret_until: datetime | None = Field(default=None, sa_type=TZ)
    """Until then deliveries are signed with the previous secret as well (a rotation's overlap)."""
    last_sequence: int = Field(sa_type=sa.BigInteger)
    failing_since: datetime | None = Field(default=None, sa_type=TZ)
    created_at: datetime = Field(sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, until it is delivered or given up; ``ordering_key`` (the
    database) holds back later events of the same database while an earlier one is pending."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("webhook_deliveries_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
        sa.Index("webhook_deliveries_order", "endpoint_id", "ordering_key", "sequence"),
    )
    endpoint_id: uuid.UUID = Field(primary_key=True)
    event_id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID
    sequence: int = Field(sa_type=sa.BigInteger)
    ordering_key: str
    status: str
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=TZ)
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime = Field(sa_type=TZ)
    delivered_at: datetime | None = Field(default=None, sa_type=TZ)


def pending_delivery(endpoint: Any, event: Any, now: datetime) -> dict[str, Any]:
    """The row that queues ``event`` (a row of ``events``) for ``endpoint``, due at once."""
    return {
        "endpoint_id": endpoint.id,
        "event_id": event.id,
        "project_id": endpoint.project_id,
        "sequence": event.sequence,
        "ordering_key": str(event.data.get("database_id", "")),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    id: uuid.UUID = Field(primary_key=True)
    endpoint_id: uuid.UUID = Field(index=True)
    event_id: uuid.UUID
    attempted_at: datetime = Field(sa_type=TZ)
    status_code: int | None = None
    duration_ms: int
    error: str | None = None
    next_attempt_at: datetime | None = Field(default=None, sa_type=TZ)


WEBHOOK_ENDPOINTS, WEBHOOK_DELIVERIES, WEBHOOK_ATTEMPTS = (
    table(m) for m in (WebhookEndpoint, WebhookDelivery, WebhookAttempt)
)
TOKENS, CREDENTIALS, IDEMPOTENCY, OUTBOX, SLOTS, AUTH_FAILURES, RATE_WINDOWS = (
    table(m) for m in (ApiToken, DatabaseCredential, IdempotencyKey, OutboxMessage, BackupSlot, AuthFailure, RateWindow)
)
