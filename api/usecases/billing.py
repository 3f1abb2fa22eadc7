"""Billing through Stripe: checkout and the customer portal for an organization, and Stripe's
events acted on.

An event is believed only with a valid signature over the raw body, made within five minutes
(``stripe.Webhook.construct_event``). It is acted on once: its id is recorded in the transaction of
its effect. Events arrive in any order, so none is trusted for the subscription's state: it is read
again from Stripe, and the organization is brought to what it says now. An active subscription to
the pro price is the pro plan; a late payment keeps it for the grace period
(``billing_grace_days``), after which the scheduler suspends the organization
(``producers.suspensions``); a payment resumes it at once; a canceled subscription is the free plan.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import BillingPublic, BillingSession
from api.platform import Platform
from api.principal import Principal
from api.usecases import organizations
from infra.metadata.tables import ORGANIZATIONS, STRIPE_EVENTS, USERS
from infra.settings import Settings
from infra.stripe_api import stripe_client
from producers import suspensions

ACTOR = "stripe"
log = logging.getLogger("pgplane.billing")
HANDLED = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)
PAYING = frozenset({"active", "trialing"})
LATE = frozenset({"past_due", "unpaid", "incomplete"})


def not_configured() -> ApiError:
    """A platform without billing has no billing routes to speak of: 404, like any absent thing."""
    return ApiError(404, "billing_not_configured", "billing is not configured on this platform")


def client(settings: Settings) -> stripe.StripeClient:
    configured = stripe_client(settings)
    if configured is None:
        raise not_configured()
    return configured


def billing_public(row: Any) -> BillingPublic:
    return BillingPublic(
        organization_id=row.id,
        plan=row.plan,
        status=row.billing_status,
        grace_until=row.grace_until,
        customer=row.stripe_customer_id,
        subscription=row.stripe_subscription_id,
    )


async def read(conn: AsyncConnection, principal: Principal, organization_id: uuid.UUID) -> BillingPublic:
    principal.check_role(organization_id, "admin")
    row = (await conn.execute(sa.select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id))).first()
    if row is None:
        raise not_found("organization")
    return billing_public(row)


async def checkout(platform: Platform, principal: Principal, organization_id: uuid.UUID) -> BillingSession:
    """A Stripe Checkout session subscribing the organization to the pro plan (its admins)."""
    settings = platform.settings
    stripe_client = client(settings)
    if not settings.stripe_price_pro:
        raise not_configured()
    customer = await _customer(platform, stripe_client, principal, organization_id)
    base = settings.base_url()
    session = await stripe_client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": str(organization_id),
            "line_items": [{"price": settings.stripe_price_pro, "quantity": 1}],
            "success_url": f"{base}/api/v1/orgs/{organization_id}/billing?checkout=done",
            "cancel_url": f"{base}/api/v1/orgs/{organization_id}/billing?checkout=canceled",
            "metadata": {"organization_id": str(organization_id)},
        }
    )
    return BillingSession(url=str(session.url))


async def portal(platform: Platform, principal: Principal, organization_id: uuid.UUID) -> BillingSession:
    """A Stripe customer portal session: invoices, payment method, cancellation (its admins)."""
    stripe_client = client(platform.settings)
    async with platform.autocommit.connect() as conn:
        row = await read(conn, principal, organization_id)
    if row.customer is None:
        raise ApiError(409, "no_billing_account", "the organization has not subscribed yet: start with checkout")
    session = await stripe_client.v1.billing_portal.sessions.create_async(
        {"customer": row.customer, "return_url": f"{platform.settings.base_url()}/api/v1/orgs/{organization_id}"}
    )
    return BillingSession(url=str(session.url))


async def _customer(
    platform: Platform, stripe_client: stripe.StripeClient, principal: Principal, organization_id: uuid.UUID
) -> str:
    """The organization's Stripe customer, made the first time (and kept: one per organization)."""
    async with platform.autocommit.connect() as conn:
        billing = await read(conn, principal, organization_id)
        email = None
        if principal.user_id is not None:
            email = (await conn.execute(sa.select(USERS.c.email).where(USERS.c.id == principal.user_id))).scalar()
    if billing.customer is not None:
        return billing.customer
    made = await stripe_client.v1.customers.create_async(
        {"email": email or "", "metadata": {"organization_id": str(organization_id)}}
    )
    async with platform.engine.begin() as conn:
        kept = (
            await conn.execute(
                sa.update(ORGANIZATIONS)
                .where(ORGANIZATIONS.c.id == organization_id, ORGANIZATIONS.c.stripe_customer_id.is_(None))
                .values(stripe_customer_id=made.id)
                .returning(ORGANIZATIONS.c.stripe_customer_id)
            )
        ).scalar()
        if kept is None:  # a concurrent checkout made one first: use it
            kept = (
                await conn.execute(
                    sa.select(ORGANIZATIONS.c.stripe_customer_id).where(ORGANIZATIONS.c.id == organization_id)
                )
            ).scalar_one()
    return str(kept)


# --- Stripe's events ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    event_id: str
    type: str
    acted: bool
    """False: a duplicate, or a type pgplane does not act on."""


def verify(settings: Settings, payload: bytes, signature: str | None) -> stripe.Event:
    if settings.stripe_webhook_secret is None:
        raise not_configured()
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            payload, signature, settings.stripe_webhook_secret.get_secret_value(), tolerance=300
        )
    except (stripe.SignatureVerificationError, ValueError):
        raise ApiError(400, "invalid_signature", "the Stripe-Signature header does not verify this body") from None
    return event


def _ids(event: stripe.Event) -> tuple[str | None, str | None, str | None]:
    """(organization id, customer, subscription) the event names."""
    obj = event.data.object.to_dict()
    customer = obj.get("customer")
    if event.type == "checkout.session.completed":
        return obj.get("client_reference_id"), customer, obj.get("subscription")
    if event.type.startswith("customer.subscription."):
        return None, customer, obj.get("id")
    subscription = obj.get("subscription")
    if subscription is None:  # newer API versions: invoice.parent.subscription_details.subscription
        parent = obj.get("parent") or {}
        subscription = (parent.get("subscription_details") or {}).get("subscription")
    return None, customer, subscription


async def receive(platform: Platform, payload: bytes, signature: str | None) -> Received:
    settings = platform.settings
    event = verify(settings, payload, signature)
    if event.type not in HANDLED:
        return Received(event.id, event.type, acted=False)
    organization_hint, customer, subscription_id = _ids(event)
    subscription = None
    if subscription_id:  # the truth now, whatever order the events came in
        read = await client(settings).v1.subscriptions.retrieve_async(str(subscription_id))
        subscription = read.to_dict()
    async with platform.engine.begin() as conn:
        fresh = (
            await conn.execute(
                insert(STRIPE_EVENTS)
                .values(id=event.id, type=event.type, received_at=datetime.now(UTC))
                .on_conflict_do_nothing()
                .returning(STRIPE_EVENTS.c.id)
            )
        ).first()
        if fresh is None:
            return Received(event.id, event.type, acted=False)
        row = await _organization(conn, organization_hint, customer)
        if row is None:
            return Received(event.id, event.type, acted=False)  # not ours (another product's customer)
        await _apply(conn, platform, row, customer, subscription)
    try:
        await platform.relay.drain()  # a resume's commands leave at once
    except Exception:
        log.exception("publishing after a Stripe event failed; the outbox relay will retry")
    return Received(event.id, event.type, acted=True)


async def _organization(conn: AsyncConnection, organization_id: str | None, customer: str | None) -> Any:
    query = sa.select(ORGANIZATIONS).with_for_update()
    if organization_id:
        try:
            found = query.where(ORGANIZATIONS.c.id == uuid.UUID(organization_id))
        except ValueError:
            return None
    elif customer:
        found = query.where(ORGANIZATIONS.c.stripe_customer_id == customer)
    else:
        return None
    return (await conn.execute(found)).first()


async def _apply(
    conn: AsyncConnection, platform: Platform, row: Any, customer: str | None, subscription: dict[str, Any] | None
) -> None:
    """Bring the organization to what its subscription says now."""
    values: dict[str, Any] = {}
    if customer and row.stripe_customer_id is None:
        values["stripe_customer_id"] = customer
    plan = row.plan
    if subscription is not None:
        status = str(subscription["status"])
        items = subscription.get("items", {}).get("data", [])
        pro = any(item["price"]["id"] == platform.settings.stripe_price_pro for item in items)
        values["stripe_subscription_id"] = subscription["id"]
        if status in PAYING:
            plan, values["billing_status"], values["grace_until"] = ("pro" if pro else "free"), "active", None
            if row.suspended_reason == suspensions.OVERDUE:  # paid: back at once
                await suspensions.resume(conn, platform.outbox, row.id, actor=ACTOR)
                await suspensions.converge(conn, platform.outbox, actor=ACTOR, organization_id=row.id)
        elif status in LATE:
            values["billing_status"] = "past_due"
            grace = row.grace_until or datetime.now(UTC) + timedelta(days=platform.settings.billing_grace_days)
            values["grace_until"] = grace
        else:  # canceled, incomplete_expired, paused
            plan, values["billing_status"], values["grace_until"] = "free", "canceled", None
    if values:
        await conn.execute(sa.update(ORGANIZATIONS).where(ORGANIZATIONS.c.id == row.id).values(values))
    if plan != row.plan:
        await organizations.change_plan(conn, platform, Principal(ACTOR), row.id, plan)
