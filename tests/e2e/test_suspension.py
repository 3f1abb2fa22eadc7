"""Suspension, end to end on a real data host: an administrator suspends an organization and its
tenant's login through PgBouncer is refused (nothing is deleted, nothing new is created), then
resumes it and the login works; and billing does the same on its own: a failed payment past its
grace period suspends the organization (the scheduler), a payment resumes it at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import psycopg
import pytest

from devstack.cluster import Cluster
from devstack.stack import Stack
from tests.e2e.test_accounts import User, eventually, sign_up
from tests.e2e.test_billing import PRICE, SECRET, send, stripe_api, stripe_says
from tests.platform_client import PlatformClient
from tests.stacks import new_stack

__all__ = ["stripe_api"]  # the module's local Stripe server


@pytest.fixture(scope="module")
def stack(cluster: Cluster, stripe_api: str) -> Iterator[Stack]:
    env = {
        "PGPLANE_STRIPE_SECRET_KEY": "sk_test_local",
        "PGPLANE_STRIPE_WEBHOOK_SECRET": SECRET,
        "PGPLANE_STRIPE_API_BASE": stripe_api,
        "PGPLANE_STRIPE_PRICE_PRO": PRICE,
        "PGPLANE_BILLING_GRACE_DAYS": "0",  # a failed payment suspends at the scheduler's next tick
        "PGPLANE_SCHEDULER_INTERVAL_SECONDS": "1",
        "PGPLANE_RECONCILE_SECONDS": "0.5",
        "PGPLANE_STATE_REPORT_SECONDS": "0.5",
    }
    platform = new_stack(cluster, env, processes=("projector", "agent", "scheduler", "api"))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


def login(uri: str) -> str | None:
    """``None`` when the tenant gets in; else what it is told."""
    try:
        with psycopg.connect(uri, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.OperationalError as error:
        return str(error)


async def status_of(owner: User, database_id: str) -> str:
    status: str = (await owner.get(f"/databases/{database_id}")).json()["status"]
    return status


async def reaches(owner: User, database_id: str, status: str) -> bool:
    return await eventually(lambda: _is(owner, database_id, status), timeout=60) is True


async def _is(owner: User, database_id: str, status: str) -> bool:
    return await status_of(owner, database_id) == status


class Tenancy(NamedTuple):
    owner: User
    org_id: str
    project_id: str
    database: dict[str, Any]
    uri: str


async def organization_with_database(client: PlatformClient, email: str, name: str, org: str) -> Tenancy:
    """A new user whose organization has a project with one available database."""
    owner = await sign_up(client, email, name)
    org_id = (await owner.post("/orgs", {"name": org})).json()["id"]
    project_id = (await owner.post("/projects", {"name": "app", "organization_id": org_id})).json()["id"]
    assert await eventually(lambda: _visible(owner, project_id))
    created = await owner.post("/databases", {"project_id": project_id, "name": "app"})
    assert created.status_code == 202, created.text
    database = created.json()["database"]
    assert await reaches(owner, database["id"], "available")
    uri = (await owner.get(f"/databases/{database['id']}/credentials")).json()["uri"]
    return Tenancy(owner, org_id, project_id, database, uri)


async def test_suspended_organizations_refuse_logins_until_resumed(client: PlatformClient, stripe_api: str) -> None:
    owner, org_id, project_id, database, uri = await organization_with_database(
        client, "sam@example.com", "Sam", "Suspendable"
    )
    database_id = database["id"]
    assert login(uri) is None

    suspended = await client.http.post(
        f"/admin/organizations/{org_id}/suspend", json={"reason": "abuse report"}, headers=client.admin
    )
    assert suspended.status_code == 200 and suspended.json()["suspended_reason"] == "abuse report"
    assert await reaches(owner, database_id, "suspended")
    refused = login(uri)
    assert refused is not None and "not permitted to log in" in refused, refused
    more = await owner.post("/databases", {"project_id": project_id, "name": "more"})
    assert more.status_code == 409 and more.json()["error"]["code"] == "organization_suspended"
    rotate = await owner.post(f"/databases/{database_id}/rotate-credentials", {})
    assert rotate.status_code == 409 and rotate.json()["error"]["code"] == "database_suspended"

    resumed = await client.http.post(f"/admin/organizations/{org_id}/resume", headers=client.admin)
    assert resumed.status_code == 200 and resumed.json()["suspended_at"] is None
    assert await reaches(owner, database_id, "available")
    assert login(uri) is None

    # billing: pro, then a payment fails past its grace period, then it is paid
    await owner.post(f"/orgs/{org_id}/billing/checkout", {})
    customer = (await owner.get(f"/orgs/{org_id}/billing")).json()["customer"]
    subscription = {"id": "sub_sam", "object": "subscription", "customer": customer}
    stripe_says(stripe_api, "sub_sam", customer, "active")
    await send(client, "evt_sam_1", "customer.subscription.created", subscription)
    stripe_says(stripe_api, "sub_sam", customer, "past_due")
    invoice = {"id": "in_sam", "object": "invoice", "customer": customer, "subscription": "sub_sam"}
    await send(client, "evt_sam_2", "invoice.payment_failed", invoice)
    assert await reaches(owner, database_id, "suspended")  # the scheduler, once the grace period ended
    organization = (await owner.get(f"/orgs/{org_id}")).json()
    assert organization["suspended_reason"] == "payment overdue" and organization["plan"] == "pro"
    assert login(uri) is not None

    stripe_says(stripe_api, "sub_sam", customer, "active")
    await send(client, "evt_sam_3", "invoice.paid", invoice)
    assert await reaches(owner, database_id, "available")
    assert login(uri) is None

    async def audited() -> list[str]:
        entries = (await owner.get(f"/audit-log?organization_id={org_id}")).json()["data"]
        actions = sorted(
            e["action"] for e in entries if e["action"].startswith("organization.s") or "resume" in e["action"]
        )
        return actions if len(actions) >= 4 else []

    assert await eventually(audited) == [
        "organization.resume",
        "organization.resume",
        "organization.suspend",
        "organization.suspend",
    ]
    operations = (await owner.get(f"/audit-log?project_id={project_id}")).json()["data"]
    kinds = sorted(e["action"] for e in operations if e["action"] in ("database.suspend", "database.resume"))
    assert kinds.count("database.suspend") >= 2 and kinds.count("database.resume") >= 2


async def test_a_suspended_databases_role_made_again_by_a_repair_still_refuses_logins(
    client: PlatformClient, stack: Stack
) -> None:
    """Behind pgplane's back the role of a suspended database is dropped; the reconciler makes it
    again (its drift is repairable), but without login: it is still suspended. Resuming lets it in."""
    owner, org_id, _, database, uri = await organization_with_database(client, "rae@example.com", "Rae", "Dropped")
    suspended = await client.http.post(
        f"/admin/organizations/{org_id}/suspend", json={"reason": "abuse report"}, headers=client.admin
    )
    assert suspended.status_code == 200, suspended.text
    assert await reaches(owner, database["id"], "suspended")

    role = database["user"]
    with psycopg.connect(stack.cluster.superuser_dsn(database["dbname"]), autocommit=True) as conn:
        conn.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'.encode())
        conn.execute(f'DROP OWNED BY "{role}"'.encode())
        conn.execute(f'DROP ROLE "{role}"'.encode())

    def can_login() -> bool | None:
        with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        return None if row is None else bool(row[0])

    async def made_again() -> bool:
        return can_login() is not None

    assert await eventually(made_again, timeout=60), "the reconciler never made the dropped role again"
    assert can_login() is False
    refused = login(uri)
    assert refused is not None and "not permitted to log in" in refused, refused

    resumed = await client.http.post(f"/admin/organizations/{org_id}/resume", headers=client.admin)
    assert resumed.status_code == 200, resumed.text
    assert await reaches(owner, database["id"], "available")
    assert login(uri) is None


async def _visible(user: User, project_id: str) -> bool:
    return bool((await user.get(f"/projects/{project_id}")).status_code == 200)
