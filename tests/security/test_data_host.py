"""The data host admits tenants only through PgBouncer: no login on PostgreSQL's own port, no
``postgres`` or ``template1``; a rotation ends the sessions of the old password; a password a
tenant sets for itself is reported and pgplane's is put back; PgBouncer pools as many
connections as a tenant may open; failing tenant statements never reach PostgreSQL's log."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from devstack.stack import Stack
from tests.platform_client import PlatformClient, Tenant
from tests.stacks import WITHOUT_SCHEDULER, shared_stack

# with the reconciler; each test works in a project of its own
stack = shared_stack(
    {"PGPLANE_STATE_REPORT_SECONDS": "0.5", "PGPLANE_RECONCILE_SECONDS": "0.2"},
    processes=(*WITHOUT_SCHEDULER, "scheduler"),
)


async def ready(client: PlatformClient, tenant: Tenant, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    accepted = await client.create_database(tenant, name)
    await client.succeeded(tenant, accepted["operation"]["id"])
    return accepted["database"], await client.credentials(tenant, accepted["database"]["id"])


def connect(credentials: dict[str, Any], **overrides: Any) -> psycopg.Connection:
    params = {k: credentials[k] for k in ("host", "port", "dbname", "user", "password")} | overrides
    return psycopg.connect(**params, connect_timeout=5, autocommit=True)


async def rotate(client: PlatformClient, tenant: Tenant, database_id: str) -> dict[str, Any]:
    response = await client.http.post(f"/databases/{database_id}/rotate-credentials", headers=tenant.headers)
    assert response.status_code == 202, response.text
    return await client.succeeded(tenant, response.json()["operation"]["id"])


async def test_tenants_reach_postgresql_only_through_pgbouncer(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    _, credentials = await ready(client, tenant, "app")
    with connect(credentials) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (credentials["user"],)
    for overrides in (
        {"port": stack.cluster.pg_port},  # PostgreSQL's own port, with the right password
        {"port": stack.cluster.pg_port, "dbname": "postgres"},
        {"dbname": "postgres"},  # through PgBouncer, which routes tenant databases only
        {"dbname": "template1"},
    ):
        with pytest.raises(psycopg.OperationalError):
            connect(credentials, **overrides).close()
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        for dbname in ("postgres", "template1"):
            query = "SELECT has_database_privilege(%s, %s, 'CONNECT')"
            assert conn.execute(query, (credentials["user"], dbname)).fetchone() == (False,)


async def test_a_rotation_ends_the_old_passwords_sessions(client: PlatformClient) -> None:
    tenant = await client.tenant()
    database, old = await ready(client, tenant, "app")
    session = connect(old)
    assert session.execute("SELECT 1").fetchone() == (1,)
    operation = await rotate(client, tenant, database["id"])
    assert "sessions_ended" in [s["name"] for s in operation["steps"]]
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with connect(await client.credentials(tenant, database["id"])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


async def test_a_password_set_by_the_tenant_is_reported_and_pgplanes_put_back(
    client: PlatformClient, stack: Stack
) -> None:
    tenant = await client.tenant()
    database, credentials = await ready(client, tenant, "app")
    with connect(credentials) as conn:
        conn.execute("ALTER ROLE current_user PASSWORD 'chosen-by-the-tenant'")
    deadline = time.monotonic() + 30
    while True:
        audit = (await client.http.get(f"/audit-log?project_id={tenant.project_id}", headers=tenant.headers)).json()
        drift = [e for e in audit["data"] if e["action"] == "host.drift"]
        if {e["outcome"] for e in drift} == {"detected", "repaired"}:
            break
        assert time.monotonic() < deadline, f"the drift was never reported and repaired: {drift}"
        await asyncio.sleep(0.3)
    assert {e["resource_id"] for e in drift} == {database["id"]} and "chosen" not in str(drift)
    assert {e["detail"]["kind"] for e in drift} == {"verifier_changed"}
    with connect(credentials) as conn:  # pgplane's password works again
        assert conn.execute("SELECT 1").fetchone() == (1,)
    await rotate(client, tenant, database["id"])
    with connect(await client.credentials(tenant, database["id"])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        held = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (database["user"],)).fetchone()
    assert held is not None and held[0].startswith("SCRAM-SHA-256$")


async def test_pgbouncer_pools_every_connection_a_tenant_may_open(client: PlatformClient) -> None:
    tenant = await client.tenant()
    _, credentials = await ready(client, tenant, "app")
    sessions = [connect(credentials) for _ in range(20)]  # the tenant's connection limit
    try:
        pids = {s.execute("SELECT pg_backend_pid()").fetchone() for s in sessions}
        assert len(pids) == 20  # each has its own server connection at once: none queues
    finally:
        for session in sessions:
            session.close()


async def test_failing_tenant_statements_keep_passwords_out_of_the_log(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    _, credentials = await ready(client, tenant, "app")
    with connect(credentials) as conn, pytest.raises(psycopg.Error):
        conn.execute("ALTER ROLE current_user PASSWORD 'leaked-secret-0451' VALID UNTIL 'not a date'")
    log = (stack.cluster.root / "logs" / "postgres.log").read_text(errors="replace")
    assert "leaked-secret-0451" not in log
