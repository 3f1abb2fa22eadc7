"""Billing: an organization's subscription through Stripe (checkout, customer portal), and the
endpoint Stripe sends its events to."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request

from api.deps import CurrentPrincipal, PlatformDep
from api.errors import errors
from api.models import BillingPublic, BillingSession, StripeReceipt
from api.usecases import billing

router = APIRouter(tags=["billing"], responses=errors(422, 429))


@router.get("/orgs/{organization_id}/billing", response_model=BillingPublic, responses=errors(401, 403, 404))
async def read_billing(
    *, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID
) -> BillingPublic:
    """The organization's plan and subscription (its admins)."""
    async with platform.autocommit.connect() as conn:
        return await billing.read(conn, principal, organization_id)


@router.post(
    "/orgs/{organization_id}/billing/checkout",
    response_model=BillingSession,
    responses=errors(401, 403, 404, 413, 415),
)
async def checkout(*, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID) -> BillingSession:
    """A Stripe Checkout page subscribing the organization to the pro plan; the plan changes when
    Stripe says the subscription is active."""
    return await billing.checkout(platform, principal, organization_id)


@router.post(
    "/orgs/{organization_id}/billing/portal",
    response_model=BillingSession,
    responses=errors(401, 403, 404, 409, 413, 415),
)
async def portal(*, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID) -> BillingSession:
    """Stripe's customer portal: invoices, payment method, cancellation."""
    return await billing.portal(platform, principal, organization_id)


@router.post("/billing/stripe/webhook", response_model=StripeReceipt, responses=errors(400, 404, 413, 415))
async def stripe_webhook(
    *,
    platform: PlatformDep,
    request: Request,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> StripeReceipt:
    """Stripe's events, verified by their signature over the raw body (no bearer token)."""
    received = await billing.receive(platform, await request.body(), stripe_signature)
    return StripeReceipt(acted=received.acted)
