"""Metadata tables the API and the producers write directly (never from events): API tokens,
encrypted tenant passwords, idempotency keys, the outbox and the scheduler's claimed slots."""

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


class AuthFailure(SQLModel, table=True):
    """Wrong credentials per client address in the current window: past the limit, a 429."""

    __tablename__ = "auth_failures"
    client: str = Field(primary_key=True)
    window_started: datetime = Field(sa_type=TZ)
    failures: int


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


TOKENS, CREDENTIALS, IDEMPOTENCY, OUTBOX, SLOTS, AUTH_FAILURES = (
    table(m) for m in (ApiToken, DatabaseCredential, IdempotencyKey, OutboxMessage, BackupSlot, AuthFailure)
)
