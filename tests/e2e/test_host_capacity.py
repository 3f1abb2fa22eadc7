"""A data host admits a fleet without starving anyone: a full host refuses new databases at once
(503, nothing published, nothing made), and server connections a database no longer uses are
given back to PostgreSQL within seconds instead of holding a backend for ten minutes."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from devstack.stack import Stack
from infra.pgbouncer import SERVER_IDLE_TIMEOUT
from tests.backup_helpers import ready_database
from tests.e2e.test_bad_input import commands_published, host_database_count
from tests.platform_client import PlatformClient

CAPACITY = 3


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"PGPLANE_HOST_MAX_DATABASES": str(CAPACITY)}


async def test_a_full_host_refuses_new_databases_at_once(client: PlatformClient, stack: Stack) -> None:
    tenants = [await client.tenant(), await client.tenant()]
    before_commands, before_databases = await commands_published(stack), host_database_count(stack)
    responses = await asyncio.gather(
        *(
            client.http.post("/databases", json={"project_id": t.project_id, "name": f"db{i}"}, headers=t.headers)
            for i in range(3)
            for t in tenants
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * CAPACITY + [503] * (6 - CAPACITY), codes
    refused = [r.json()["error"] for r in responses if r.status_code == 503]
    assert {e["code"] for e in refused} == {"capacity_exhausted"}
    assert all("the data host is full" in e["message"] for e in refused)
    accepted = [r.json() for r in responses if r.status_code == 202]
    assert await commands_published(stack) == before_commands + CAPACITY  # the refused ones published nothing
    owners = {t.project_id: t for t in tenants}
    for body in accepted:
        await client.succeeded(owners[body["database"]["project_id"]], body["operation"]["id"])
    assert host_database_count(stack) == before_databases + CAPACITY

    first = accepted[0]["database"]
    owner = owners[first["project_id"]]
    deleted = await client.http.delete(f"/databases/{first['id']}", headers=owner.headers)
    await client.succeeded(owner, deleted.json()["operation"]["id"])
    again = await client.http.post(
        "/databases", json={"project_id": owner.project_id, "name": "after"}, headers=owner.headers
    )
    assert again.status_code == 202, again.text  # a deletion makes room


def backends(stack: Stack, role: str) -> int:
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_unused_server_connections_are_given_back(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "quiet")
    role = (await client.credentials(tenant, database_id))["user"]
    with psycopg.connect(uri) as session:
        session.execute("SELECT 1")
        assert backends(stack, role) == 1  # a session holds one backend while it lasts
    deadline = time.monotonic() + SERVER_IDLE_TIMEOUT + 20
    while backends(stack, role) > 0:  # the creation's login check and this session's backend
        assert time.monotonic() < deadline, "PgBouncer kept an unused server connection open"
        await asyncio.sleep(0.5)
