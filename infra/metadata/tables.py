"""Metadata tables the API and the producers write directly (never from events): accounts
(users, organisations, members, invitations, sessions, device authorizations, outgoing mail), API
tokens, encrypted tenant passwords, idempotency keys, the outbox, the scheduler's claimed slots,
and webhook endpoints with their deliveries."""

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
    """A project token (``project_id``) or a user's personal token (``user_id``): one of the two."""

    __tablename__ = "api_tokens"
    id: uuid.UUID = Field(primary_key=True)
    project_id: uuid.UUID | None = Field(default=None, index=True)
    user_id: uuid.UUID | None = Field(default=None, index=True)
    name: str
    secret_digest: str
    created_at: datetime = Field(sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)
    expires_at: datetime | None = Field(default=None, sa_type=TZ)
    last_used_at: datetime | None = Field(default=None, sa_type=TZ)
    scopes: list[str] = Field(sa_type=JSONB)


class User(SQLModel, table=True):
    """A person. ``password_hash`` is Argon2id (``None``: signs in only through OpenID Connect)."""

    __tablename__ = "users"
    id: uuid.UUID = Field(primary_key=True)
    email: str = Field(sa_column_kwargs={"unique": True})
    """Lowercased."""
    name: str
    password_hash: str | None = None
    platform_admin: bool = False
    created_at: datetime = Field(sa_type=TZ)


class UserIdentity(SQLModel, table=True):
    """Who a user is at an OpenID Connect provider: its issuer and the subject it names them by."""

    __tablename__ = "user_identities"
    issuer: str = Field(primary_key=True)
    subject: str = Field(primary_key=True)
    user_id: uuid.UUID = Field(index=True)
    created_at: datetime = Field(sa_type=TZ)


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    id: uuid.UUID = Field(primary_key=True)
    name: str
    plan: str = "free"
    """The plan of every project it owns (``readmodel.tables.project_plan``)."""
    created_at: datetime = Field(sa_type=TZ)
    stripe_customer_id: str | None = Field(default=None, sa_column_kwargs={"unique": True})
    stripe_subscription_id: str | None = None
    billing_status: str = "none"
    """none, active, past_due (paying late: ``grace_until``), canceled."""
    grace_until: datetime | None = Field(default=None, sa_type=TZ)
    suspended_at: datetime | None = Field(default=None, sa_type=TZ)
    """Set: every database of its projects is to be suspended (``producers.suspensions``)."""
    suspended_reason: str | None = None
    suspension_changed_at: datetime | None = Field(default=None, sa_type=TZ)
    """When it was last suspended or resumed: names the operations that carry it out."""


class StripeEvent(SQLModel, table=True):
    """Stripe events already acted on, written in the transaction of their effect: a redelivered
    event changes nothing."""

    __tablename__ = "stripe_events"
    id: str = Field(primary_key=True)
    type: str
    received_at: datetime = Field(sa_type=TZ)


class Membership(SQLModel, table=True):
    """A user's role in an organisation: ``owner``, ``admin``, ``developer`` or ``viewer``."""

    __tablename__ = "memberships"
    organization_id: uuid.UUID = Field(primary_key=True)
    user_id: uuid.UUID = Field(primary_key=True, index=True)
    role: str
    created_at: datetime = Field(sa_type=TZ)


class Invitation(SQLModel, table=True):
    """An offer of a role to an email address, accepted once through a secret link before it expires."""

    __tablename__ = "invitations"
    id: uuid.UUID = Field(primary_key=True)
    organization_id: uuid.UUID = Field(index=True)
    email: str
    role: str
    secret_digest: str
    invited_by: uuid.UUID | None
    created_at: datetime = Field(sa_type=TZ)
    expires_at: datetime = Field(sa_type=TZ)
    accepted_at: datetime | None = Field(default=None, sa_type=TZ)
    accepted_by: uuid.UUID | None = None
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)


class Session(SQLModel, table=True):
    """A signed-in browser: the cookie holds the id and a secret whose digest is stored here."""

    __tablename__ = "sessions"
    id: uuid.UUID = Field(primary_key=True)
    user_id: uuid.UUID = Field(index=True)
    secret_digest: str
    created_at: datetime = Field(sa_type=TZ)
    expires_at: datetime = Field(sa_type=TZ)
    revoked_at: datetime | None = Field(default=None, sa_type=TZ)


class DeviceAuthorization(SQLModel, table=True):
    """One OAuth 2.0 device authorization (RFC 8628), from the code's issue to its one token."""

    __tablename__ = "device_authorizations"
    id: uuid.UUID = Field(primary_key=True)
    device_code_digest: str = Field(sa_column_kwargs={"unique": True})
    user_code: str = Field(index=True)
    client_id: str
    scopes: list[str] = Field(sa_type=JSONB)
    status: str
    """pending, approved, denied, issued."""
    interval_seconds: int
    created_at: datetime = Field(sa_type=TZ)
    expires_at: datetime = Field(sa_type=TZ)
    last_polled_at: datetime | None = Field(default=None, sa_type=TZ)
    user_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None


class MailMessage(SQLModel, table=True):
    """Mail to send (invitations), written in the transaction that decides it: an outbox for mail.
    Without a mail server configured, operators read it with ``GET /api/v1/admin/mail``."""

    __tablename__ = "mail_outbox"
    id: uuid.UUID = Field(primary_key=True)
    recipient: str = Field(index=True)
    subject: str
    body_encrypted: bytes
    """It holds a secret link: sealed like every other secret at rest."""
    created_at: datetime = Field(sa_type=TZ)
    sent_at: datetime | None = Field(default=None, sa_type=TZ)


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


def pending_delivery(endpoint_id: uuid.UUID, project_id: uuid.UUID, event: Any, now: datetime) -> dict[str, Any]:
    """The row that queues ``event`` (its ``id``, ``sequence`` and ``data`` as in ``events``) for
    the endpoint ``endpoint_id`` of project ``project_id``, due at once."""
    return {
        "endpoint_id": endpoint_id,
        "event_id": event.id,
        "project_id": project_id,
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


class UsageReport(SQLModel, table=True):
    """An hour of an organization's usage sent to Stripe as a meter event (its identifier is
    ``<organization>:<hour>``, so a resend after a crash is the same event to Stripe)."""

    __tablename__ = "usage_reports"
    organization_id: uuid.UUID = Field(primary_key=True)
    hour: datetime = Field(primary_key=True, sa_type=TZ)
    database_minutes: int
    reported_at: datetime = Field(sa_type=TZ)


STRIPE_EVENTS, USAGE_REPORTS = table(StripeEvent), table(UsageReport)
USERS, IDENTITIES, ORGANIZATIONS, MEMBERSHIPS, INVITATIONS, SESSIONS, DEVICE_AUTHORIZATIONS, MAIL = (
    table(m)
    for m in (User, UserIdentity, Organization, Membership, Invitation, Session, DeviceAuthorization, MailMessage)
)
TOKENS, CREDENTIALS, IDEMPOTENCY, OUTBOX, SLOTS, AUTH_FAILURES, RATE_WINDOWS = (
    table(m) for m in (ApiToken, DatabaseCredential, IdempotencyKey, OutboxMessage, BackupSlot, AuthFailure, RateWindow)
)
