"""Stripe billing, against a local Stripe-compatible server (``devstack.stripe_server``) driven
through the ``stripe`` SDK, with events signed by the SDK's own signing code: checkout and the
portal; a forged or stale signature changes nothing; the same event twice acts once; events out
of order end in the plan the subscription has now; a failed payment keeps the plan for the grace
period, a payment ends it, a cancellation is the free plan. And usage metered to Stripe by the
hour, once per hour even when sent again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from devstack.cluster import Cluster
from devstack.stack import Stack
from infra.metadata.engine import make_engine
from infra.stripe_api import stripe_client
from producers.usage_meter import UsageMeter, hour_of
from tests.e2e.test_accounts import User, eventually, sign_up
from tests.platform_client import PlatformClient
from tests.servers import local_server
from tests.stacks import new_stack

SECRET = "whsec_" + "local0signing0secret0for0tests"
PRICE = "price_pro_monthly"


@pytest.fixture(scope="module")
def stripe_api(cluster: Cluster) -> Iterator[str]:
    with local_server(cluster, "the local Stripe server", "devstack.stripe_server", "{port}") as url:
        yield url


@pytest.fixture(scope="module")
def stack(cluster: Cluster, stripe_api: str) -> Iterator[Stack]:
    env = {
        "PGPLANE_STRIPE_SECRET_KEY": "sk_test_local",
        "PGPLANE_STRIPE_WEBHOOK_SECRET": SECRET,
        "PGPLANE_STRIPE_API_BASE": stripe_api,
        "PGPLANE_STRIPE_PRICE_PRO": PRICE,
    }
    platform = new_stack(cluster, env, processes=("projector", "agent", "api"))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


def stripe_says(stripe_api: str, subscription: str, customer: str, status: str) -> None:
    """What Stripe holds now (a customer subscribed, a payment failed, ...)."""
    body = {"customer": customer, "status": status, "price": PRICE}
    assert httpx.put(f"{stripe_api}/_local/subscriptions/{subscription}", json=body).status_code == 200


async def send(
    client: PlatformClient, event_id: str, kind: str, obj: dict[str, Any], *, secret: str = SECRET, age: int = 0
) -> httpx.Response:
    payload = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "api_version": "2025-08-27.basil",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=int(time.time()) - age)
    return await client.http.post(
        "/billing/stripe/webhook",
        content=payload,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


async def test_a_subscription_moves_the_organization_between_plans(
    client: PlatformClient, stack: Stack, stripe_api: str
) -> None:
    owner: User = await sign_up(client, "olga@example.com", "Olga")
    org_id = (await owner.post("/orgs", {"name": "Paying"})).json()["id"]
    billing = (await owner.get(f"/orgs/{org_id}/billing")).json()
    assert (billing["plan"], billing["status"], billing["customer"]) == ("free", "none", None)
    assert (await owner.post(f"/orgs/{org_id}/billing/portal", {})).status_code == 409  # nothing to manage yet

    checkout = await owner.post(f"/orgs/{org_id}/billing/checkout", {})
    assert checkout.status_code == 200 and checkout.json()["url"].startswith(f"{stripe_api}/checkout/cs_test_")
    customer = (await owner.get(f"/orgs/{org_id}/billing")).json()["customer"]
    assert customer and customer.startswith("cus_")
    again = await owner.post(f"/orgs/{org_id}/billing/checkout", {})
    assert again.status_code == 200 and (await owner.get(f"/orgs/{org_id}/billing")).json()["customer"] == customer

    # forged or stale: refused, nothing recorded
    subscription = {"id": "sub_olga", "object": "subscription", "customer": customer, "status": "active"}
    forged = await send(client, "evt_forged", "customer.subscription.created", subscription, secret="whsec_other")
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"
    stale = await send(client, "evt_stale", "customer.subscription.created", subscription, age=301)
    assert stale.status_code == 400
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        assert conn.execute("SELECT count(*) FROM stripe_events").fetchone() == (0,)

    # the customer subscribed; Stripe's events arrive out of order, the older one saying "incomplete"
    stripe_says(stripe_api, "sub_olga", customer, "active")
    completed = {"id": "cs_test_1", "object": "checkout.session", "client_reference_id": org_id,
                 "customer": customer, "subscription": "sub_olga"}  # fmt: skip
    updated = await send(client, "evt_2", "customer.subscription.updated", subscription)
    created = await send(client, "evt_1", "customer.subscription.created", subscription | {"status": "incomplete"})
    done = await send(client, "evt_3", "checkout.session.completed", completed)
    assert [r.json()["acted"] for r in (updated, created, done)] == [True, True, True]
    billing = (await owner.get(f"/orgs/{org_id}/billing")).json()
    assert (billing["plan"], billing["status"], billing["subscription"]) == ("pro", "active", "sub_olga")
    twice = await send(client, "evt_2", "customer.subscription.updated", subscription)
    assert twice.status_code == 200 and twice.json()["acted"] is False

    # a payment fails: the plan stays for the grace period; a payment ends it
    stripe_says(stripe_api, "sub_olga", customer, "past_due")
    invoice = {"id": "in_1", "object": "invoice", "customer": customer, "subscription": "sub_olga"}
    await send(client, "evt_4", "invoice.payment_failed", invoice)
    billing = (await owner.get(f"/orgs/{org_id}/billing")).json()
    assert (billing["plan"], billing["status"]) == ("pro", "past_due")
    grace = datetime.fromisoformat(billing["grace_until"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < grace <= timedelta(days=7)
    stripe_says(stripe_api, "sub_olga", customer, "active")
    await send(client, "evt_5", "invoice.paid", invoice)
    billing = (await owner.get(f"/orgs/{org_id}/billing")).json()
    assert (billing["plan"], billing["status"], billing["grace_until"]) == ("pro", "active", None)

    portal = await owner.post(f"/orgs/{org_id}/billing/portal", {})
    assert portal.status_code == 200 and portal.json()["url"].startswith(f"{stripe_api}/portal/")

    # canceled: the free plan
    stripe_says(stripe_api, "sub_olga", customer, "canceled")
    await send(client, "evt_6", "customer.subscription.deleted", subscription | {"status": "canceled"})
    billing = (await owner.get(f"/orgs/{org_id}/billing")).json()
    assert (billing["plan"], billing["status"]) == ("free", "canceled")
    stranger = await send(client, "evt_7", "invoice.paid", invoice | {"customer": "cus_someone_else"})
    assert stranger.json()["acted"] is False

    async def changes() -> list[tuple[str, str]]:
        entries = (await owner.get(f"/audit-log?organization_id={org_id}")).json()["data"]
        found = [(e["actor"], e["detail"]["plan"]) for e in entries if e["action"] == "organization.plan_change"]
        return sorted(found) if len(found) >= 2 else []

    assert await eventually(changes) == [("stripe", "free"), ("stripe", "pro")]  # each once


async def test_usage_is_metered_to_stripe_by_the_hour_once(
    client: PlatformClient, stack: Stack, stripe_api: str
) -> None:
    owner = await sign_up(client, "uma@example.com", "Uma")
    org_id = (await owner.post("/orgs", {"name": "Metered"})).json()["id"]
    project_id = (await owner.post("/projects", {"name": "app", "organization_id": org_id})).json()["id"]
    assert (await owner.post(f"/orgs/{org_id}/billing/checkout", {})).status_code == 200
    customer = (await owner.get(f"/orgs/{org_id}/billing")).json()["customer"]
    assert await eventually(lambda: _visible(owner, project_id))
    created = await owner.post("/databases", {"project_id": project_id, "name": "app"})
    assert created.status_code == 202, created.text
    status = await eventually(lambda: _done(owner, created.json()["operation"]["id"]), timeout=90)
    assert status == "succeeded"

    settings = stack.settings("scheduler")
    billing = stripe_client(settings)
    assert billing is not None
    engine = make_engine(settings.metadata_dsn, pool_size=1)
    meter = UsageMeter(engine, settings, billing)
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:  # not the clock: it may pass an hour
        times = conn.execute(
            "SELECT o.created_at, d.created_at FROM organizations o, databases d WHERE o.id = %s AND d.id = %s",
            (org_id, created.json()["database"]["id"]),
        ).fetchone()
    assert times is not None
    began, made = times
    later = began + timedelta(hours=2)  # two hours have ended since the organization began
    first = hour_of(began)

    def reported() -> int:
        with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
            row = conn.execute("SELECT count(*) FROM usage_reports WHERE organization_id = %s", (org_id,)).fetchone()
        return int(row[0]) if row else 0

    def metered() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = httpx.get(f"{stripe_api}/_local/meter_events").json()
        return [e for e in events if e["identifier"].startswith(org_id)]

    try:
        await meter.report(later)
        assert reported() == 2 and len(metered()) == 2
        assert await meter.report(later) == 0  # every subscribed organization's hours are recorded: none sent again
        with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:  # as if it died after sending
            conn.execute("DELETE FROM usage_reports WHERE organization_id = %s", (org_id,))
        assert await meter.report(later) == 2
        assert reported() == 2
    finally:
        await engine.dispose()
    events = metered()
    assert sorted(e["identifier"] for e in events) == [
        f"{org_id}:{first:%Y-%m-%dT%H}",
        f"{org_id}:{first + timedelta(hours=1):%Y-%m-%dT%H}",
    ]  # the resend was the same two events: Stripe bills each hour once
    assert all(e["payload"]["stripe_customer_id"] == customer for e in events)
    values = {e["identifier"]: int(e["payload"]["value"]) for e in events}
    assert values[f"{org_id}:{first + timedelta(hours=1):%Y-%m-%dT%H}"] == 60  # a whole hour of one database
    in_first_hour = (first + timedelta(hours=1) - made).total_seconds()  # the database's part of it
    assert values[f"{org_id}:{first:%Y-%m-%dT%H}"] == round(in_first_hour / 60)


async def _visible(user: User, project_id: str) -> bool:
    return bool((await user.get(f"/projects/{project_id}")).status_code == 200)


async def _done(user: User, operation_id: str) -> str | None:
    status: str = (await user.get(f"/operations/{operation_id}")).json()["status"]
    return status if status in ("succeeded", "failed", "compensated") else None
