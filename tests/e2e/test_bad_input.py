"""Bad input gets a 422 with a message and changes nothing: no message on the bus, no DDL."""

from __future__ import annotations

import asyncio

import nats
import psycopg

from devstack.stack import Stack
from infra.host_postgres import GONE_PREFIX, WARM_PREFIX
from schemas.subjects import Subjects
from tests.platform_client import PlatformClient, new_key
from tests.stacks import shared_stack

BAD_NAMES = [
    "x'; DROP DATABASE postgres; --",
    'a"b',
    "semi;colon",
    "ünïcode",
    "数据库",
    "a" * 64,
    "Upper",
    "1starts-with-digit",
    "",
    "postgres",
    "template1",
    "pgbouncer",
    "pg_catalog",
]


stack = shared_stack({"PGPLANE_DATABASES_PER_PROJECT_FREE": "3"})  # each test works in a project of its own


def host_database_count(stack: Stack) -> int:
    """Databases on the host but the warm ones, which the agent makes again after any create, and
    those set aside, which it drops in the background after a delete."""
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE NOT starts_with(datname, %s) AND NOT starts_with(datname, %s)",
            (WARM_PREFIX, GONE_PREFIX),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def commands_published(stack: Stack) -> int:
    """Every command ever published: the stream's last sequence. (Its message count would not do:
    the commands stream is a work queue, so a command the agent has acked is gone from it.)"""
    nc = await nats.connect(**stack.nats())
    try:
        info = await nc.jetstream().stream_info(Subjects(namespace=stack.namespace).commands_stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def test_bad_names_and_bodies_are_refused(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    before, before_commands = host_database_count(stack), await commands_published(stack)
    bodies = [{"project_id": tenant.project_id, "name": name} for name in BAD_NAMES]
    bodies += [
        {"project_id": tenant.project_id, "name": "ok", "owner": "postgres"},  # unknown field
        {"project_id": "not-a-uuid", "name": "ok"},
        {"name": "ok"},
    ]
    for body in bodies:
        response = await client.http.post(
            "/databases", json=body, headers=tenant.headers | {"Idempotency-Key": new_key()}
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["message"], body
    assert (await client.http.get("/databases", headers=tenant.headers)).json()["count"] == 0
    assert await commands_published(stack) == before_commands
    assert host_database_count(stack) == before


async def test_idempotency_key_reused_with_another_body(client: PlatformClient) -> None:
    tenant = await client.tenant()
    key = new_key()
    await client.create_database(tenant, "one", key=key)
    response = await client.http.post(
        "/databases",
        json={"project_id": tenant.project_id, "name": "two"},
        headers=tenant.headers | {"Idempotency-Key": key},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


async def test_quota_holds_under_concurrent_creates(client: PlatformClient) -> None:
    tenant = await client.tenant()
    responses = await asyncio.gather(
        *(
            client.http.post(
                "/databases", json={"project_id": tenant.project_id, "name": f"db{i}"}, headers=tenant.headers
            )
            for i in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 3 + [409] * 5, codes
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"quota_exceeded"}
