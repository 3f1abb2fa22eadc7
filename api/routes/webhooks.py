"""Webhook endpoints of a project: deliveries follow the Standard Webhooks specification."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query

from api.deps import CurrentPrincipal, MutationDep, PlatformDep, require_project_admin
from api.errors import errors
from api.models import (
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
from api.usecases import webhooks

router = APIRouter(
    prefix="/webhooks",
    tags=["webhooks"],
    responses=errors(401, 403, 422, 429),
    dependencies=[Depends(require_project_admin)],
)


@router.post("", status_code=201, response_model=WebhookWithSecret, responses=errors(404, 413, 415))
async def create_webhook(
    *, principal: CurrentPrincipal, mutation: MutationDep, body: WebhookCreate
) -> WebhookWithSecret:
    """Register an endpoint; the project's events from now on are sent to it, signed with the
    `secret` shown here (again only for a retry with the same Idempotency-Key)."""
    return await mutation.run(
        lambda conn: webhooks.create_endpoint(conn, mutation.platform, principal, body), WebhookWithSecret, sealed=True
    )


@router.get("", response_model=WebhooksPublic, responses=errors(404))
async def list_webhooks(*, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID) -> WebhooksPublic:
    async with platform.autocommit.connect() as conn:
        return await webhooks.list_endpoints(conn, principal, project_id)


@router.get("/{endpoint_id}", response_model=WebhookPublic, responses=errors(404))
async def read_webhook(*, platform: PlatformDep, principal: CurrentPrincipal, endpoint_id: uuid.UUID) -> WebhookPublic:
    async with platform.autocommit.connect() as conn:
        return webhooks.webhook_public(await webhooks.load_endpoint(conn, principal, endpoint_id))


@router.patch("/{endpoint_id}", response_model=WebhookPublic, responses=errors(404, 413, 415))
async def update_webhook(
    *, principal: CurrentPrincipal, mutation: MutationDep, endpoint_id: uuid.UUID, body: WebhookUpdate
) -> WebhookPublic:
    """Change the URL, the event types, the description, or enable/disable it."""
    return await mutation.run(
        lambda conn: webhooks.update_endpoint(conn, mutation.platform, principal, endpoint_id, body), WebhookPublic
    )


@router.delete("/{endpoint_id}", response_model=WebhookPublic, responses=errors(404, 413, 415))
async def delete_webhook(
    *, principal: CurrentPrincipal, mutation: MutationDep, endpoint_id: uuid.UUID
) -> WebhookPublic:
    return await mutation.run(lambda conn: webhooks.delete_endpoint(conn, principal, endpoint_id), WebhookPublic)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookWithSecret, responses=errors(404, 413, 415))
async def rotate_webhook_secret(
    *, principal: CurrentPrincipal, mutation: MutationDep, endpoint_id: uuid.UUID
) -> WebhookWithSecret:
    """A new secret; deliveries carry both signatures during the overlap (`PGPLANE_WEBHOOK_SECRET_OVERLAP_SECONDS`)."""
    return await mutation.run(
        lambda conn: webhooks.rotate_secret(conn, mutation.platform, principal, endpoint_id),
        WebhookWithSecret,
        sealed=True,
    )


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryAttemptsPublic, responses=errors(404))
async def list_deliveries(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    endpoint_id: uuid.UUID,
    limit: int = Query(default=100, ge=1, le=1000),
) -> DeliveryAttemptsPublic:
    """Delivery attempts, newest first: the event, when, the HTTP status, how long, the next retry."""
    async with platform.autocommit.connect() as conn:
        return await webhooks.list_attempts(conn, principal, endpoint_id, limit=limit)


@router.post("/{endpoint_id}/replay", response_model=WebhookReplayed, responses=errors(404, 413, 415))
async def replay_webhook(
    *, principal: CurrentPrincipal, mutation: MutationDep, endpoint_id: uuid.UUID, body: WebhookReplay
) -> WebhookReplayed:
    """Send one event again (`event_id`), or every event of the endpoint's types in a time range."""
    return await mutation.run(lambda conn: webhooks.replay(conn, principal, endpoint_id, body), WebhookReplayed)


@router.post("/{endpoint_id}/test", response_model=WebhookTestSent, responses=errors(404, 413, 415))
async def test_webhook(
    *, platform: PlatformDep, principal: CurrentPrincipal, endpoint_id: uuid.UUID
) -> WebhookTestSent:
    """Send a `webhook.test` event now and say how the endpoint answered (each call sends one)."""
    return await webhooks.send_test(platform, principal, endpoint_id)
