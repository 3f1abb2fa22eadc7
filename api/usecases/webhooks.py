"""Webhook endpoints: registered per project, checked against the address guard, each with a
``whsec_`` secret kept encrypted; rotation keeps the old secret signing for an overlap."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import (
    DeliveryAttemptPublic,
    DeliveryAttemptsPublic,
    WebhookCreate,
    WebhookPublic,
    WebhookReplay,
    WebhookReplayed,
    WebhooksPublic,
    WebhookTestSent,
    WebhookUpdate,
    WebhookWithSecret,
)
from api.platform import Platform
from api.principal import Principal
from api.usecases.projects import load_project
from infra.address_guard import Refused
from infra.metadata.tables import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS, pending_delivery
from infra.webhook_signing import endpoint_secrets, new_secret, secret_context
from readmodel.tables import EVENT_SEQUENCES, EVENTS
from schemas.public_events import PublicEvent, WebhookTest, source


async def check_endpoint_url(platform: Platform, url: str) -> None:
    try:
        await platform.webhooks.check(url)
    except Refused as exc:
        raise ApiError(422, "url_refused", f"this URL cannot receive webhooks: {exc}") from None


def webhook_public(row: Any) -> WebhookPublic:
    return WebhookPublic(
        id=row.id,
        project_id=row.project_id,
        url=row.url,
        event_types=row.event_types,
        description=row.description,
        status=row.status,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def load_endpoint(conn: AsyncConnection, principal: Principal, endpoint_id: uuid.UUID) -> Any:
    row = (await conn.execute(sa.select(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id == endpoint_id))).first()
    if row is None:
        raise not_found("webhook endpoint")
    principal.admit(row.project_id, "webhook endpoint")
    return row


async def create_endpoint(
    conn: AsyncConnection, platform: Platform, principal: Principal, body: WebhookCreate
) -> WebhookWithSecret:
    """Events from now on are sent to it (the project's earlier events are in the events API)."""
    await load_project(conn, principal, body.project_id)
    await check_endpoint_url(platform, body.url)
    now, endpoint_id, secret = datetime.now(UTC), uuid.uuid4(), new_secret()
    last = (
        await conn.execute(
            sa.select(EVENT_SEQUENCES.c.last_sequence).where(EVENT_SEQUENCES.c.project_id == body.project_id)
        )
    ).scalar_one_or_none()
    row = {
        "id": endpoint_id,
        "project_id": body.project_id,
        "url": body.url,
        "description": body.description,
        "event_types": [t.value for t in body.event_types],
        "status": "enabled",
        "secret_encrypted": platform.box.encrypt(secret, context=secret_context(endpoint_id)),
        "last_sequence": last or 0,
        "created_at": now,
        "updated_at": now,
    }
    await conn.execute(sa.insert(WEBHOOK_ENDPOINTS).values(row))
    created = await load_endpoint(conn, principal, endpoint_id)
    return WebhookWithSecret(**webhook_public(created).model_dump(), secret=secret)


async def list_endpoints(conn: AsyncConnection, principal: Principal, project_id: uuid.UUID) -> WebhooksPublic:
    await load_project(conn, principal, project_id)
    query = (
        sa.select(WEBHOOK_ENDPOINTS)
        .where(WEBHOOK_ENDPOINTS.c.project_id == project_id)
        .order_by(WEBHOOK_ENDPOINTS.c.created_at)
    )
    rows = (await conn.execute(query)).all()
    return WebhooksPublic(data=[webhook_public(r) for r in rows], count=len(rows))


async def update_endpoint(
    conn: AsyncConnection, platform: Platform, principal: Principal, endpoint_id: uuid.UUID, body: WebhookUpdate
) -> WebhookPublic:
    """Change the URL, types, description or status; enabling again clears the failure record."""
    await load_endpoint(conn, principal, endpoint_id)
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if body.url is not None:
        await check_endpoint_url(platform, body.url)
        values["url"] = body.url
    if body.event_types is not None:
        values["event_types"] = [t.value for t in body.event_types]
    if body.description is not None:
        values["description"] = body.description
    if body.status is not None:
        values["status"] = body.status
        values["disabled_reason"] = None if body.status == "enabled" else "disabled by a user"
        values["failing_since"] = None
    await conn.execute(sa.update(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id == endpoint_id).values(values))
    return webhook_public(await load_endpoint(conn, principal, endpoint_id))


async def delete_endpoint(conn: AsyncConnection, principal: Principal, endpoint_id: uuid.UUID) -> WebhookPublic:
    row = await load_endpoint(conn, principal, endpoint_id)
    for table in (WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES):
        await conn.execute(sa.delete(table).where(table.c.endpoint_id == endpoint_id))
    await conn.execute(sa.delete(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id == endpoint_id))
    return webhook_public(row)


async def rotate_secret(
    conn: AsyncConnection, platform: Platform, principal: Principal, endpoint_id: uuid.UUID
) -> WebhookWithSecret:
    """A new secret at once; the old one keeps signing (next to it) for the overlap."""
    row = await load_endpoint(conn, principal, endpoint_id)
    now, secret = datetime.now(UTC), new_secret()
    overlap = timedelta(seconds=platform.settings.webhook_secret_overlap_seconds)
    values = {
        "secret_encrypted": platform.box.encrypt(secret, context=secret_context(endpoint_id)),
        "previous_secret_encrypted": row.secret_encrypted,
        "previous_secret_until": now + overlap,
        "updated_at": now,
    }
    await conn.execute(sa.update(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id == endpoint_id).values(values))
    rotated = await load_endpoint(conn, principal, endpoint_id)
    return WebhookWithSecret(**webhook_public(rotated).model_dump(), secret=secret)


async def list_attempts(
    conn: AsyncConnection, principal: Principal, endpoint_id: uuid.UUID, *, limit: int
) -> DeliveryAttemptsPublic:
    await load_endpoint(conn, principal, endpoint_id)
    query = (
        sa.select(WEBHOOK_ATTEMPTS)
        .where(WEBHOOK_ATTEMPTS.c.endpoint_id == endpoint_id)
        .order_by(WEBHOOK_ATTEMPTS.c.attempted_at.desc())
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    attempts = [
        DeliveryAttemptPublic(
            event_id=r.event_id,
            attempted_at=r.attempted_at,
            status_code=r.status_code,
            duration_ms=r.duration_ms,
            error=r.error,
            next_attempt_at=r.next_attempt_at,
        )
        for r in rows
    ]
    return DeliveryAttemptsPublic(data=attempts, count=len(attempts))


REPLAY_LIMIT = 10_000


async def replay(
    conn: AsyncConnection, principal: Principal, endpoint_id: uuid.UUID, body: WebhookReplay
) -> WebhookReplayed:
    """Queue events again for this endpoint; a delivered one goes out again with the same id."""
    endpoint = await load_endpoint(conn, principal, endpoint_id)
    query = sa.select(EVENTS.c.id, EVENTS.c.sequence, EVENTS.c.data).where(EVENTS.c.project_id == endpoint.project_id)
    chosen = [name for name in ("event_id", "after", "since") if getattr(body, name) is not None]
    if len(chosen) != 1 or (body.until is not None and body.since is None):
        raise ApiError(422, "validation_error", "give one of event_id, after, or since (and until)")
    if body.event_id is not None:
        query = query.where(EVENTS.c.id == body.event_id)
    else:
        if body.after is not None:
            query = query.where(EVENTS.c.sequence > body.after)
        elif body.since is not None:
            query = query.where(EVENTS.c.time >= body.since, EVENTS.c.time < (body.until or datetime.now(UTC)))
        if endpoint.event_types:
            query = query.where(EVENTS.c.type.in_(endpoint.event_types))
    events = (await conn.execute(query.order_by(EVENTS.c.sequence).limit(REPLAY_LIMIT + 1))).all()
    if body.event_id is not None and not events:
        raise not_found("event")
    if len(events) > REPLAY_LIMIT:
        raise ApiError(422, "validation_error", f"more than {REPLAY_LIMIT} events in that range; narrow it")
    now = datetime.now(UTC)
    rows = [pending_delivery(endpoint.id, endpoint.project_id, event, now) for event in events]
    if rows:
        statement = insert(WEBHOOK_DELIVERIES)
        again = {"status": "pending", "attempts": 0, "next_attempt_at": now, "last_error": None}
        await conn.execute(
            statement.on_conflict_do_update(index_elements=["endpoint_id", "event_id"], set_=again), rows
        )
    return WebhookReplayed(queued=len(rows))


async def send_test(platform: Platform, principal: Principal, endpoint_id: uuid.UUID) -> WebhookTestSent:
    """A ``webhook.test`` event to this endpoint now, signed like any delivery; the attempt is
    listed. No transaction is held while the endpoint answers (up to the send timeout)."""
    async with platform.autocommit.connect() as conn:
        endpoint = await load_endpoint(conn, principal, endpoint_id)
    now = datetime.now(UTC)
    data = WebhookTest(project_id=endpoint.project_id, endpoint_id=endpoint_id)
    event = PublicEvent(
        id=uuid.uuid4(),
        type=data.TYPE,
        source=source(endpoint.project_id),
        subject=data.subject(),
        time=now,
        sequence=1,
        data=data.model_dump(mode="json"),
    )
    outcome = await platform.webhooks.send(
        endpoint.url,
        endpoint_secrets(platform.box, endpoint, now),
        msg_id=str(event.id),
        body=event.model_dump_json().encode(),
    )
    async with platform.engine.begin() as conn:
        await conn.execute(
            sa.insert(WEBHOOK_ATTEMPTS).values(
                id=uuid.uuid4(),
                endpoint_id=endpoint_id,
                event_id=event.id,
                attempted_at=now,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
            )
        )
    return WebhookTestSent(
        event_id=event.id, status_code=outcome.status_code, duration_ms=outcome.duration_ms, error=outcome.error
    )
