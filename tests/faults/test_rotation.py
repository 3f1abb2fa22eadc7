"""A rotation that fails after the new password was set puts back the password of the previous
rotation, not an older one: the credentials the API shows keep working through PgBouncer."""

from __future__ import annotations

from typing import Any

import psycopg

from devstack.faults import InjectedFaults
from devstack.stack import Stack
from tests.platform_client import PlatformClient, Tenant


async def rotate(client: PlatformClient, tenant: Tenant, database_id: str) -> dict[str, Any]:
    response = await client.http.post(f"/databases/{database_id}/rotate-credentials", headers=tenant.headers)
    assert response.status_code == 202, response.text
    return await client.wait(tenant, response.json()["operation"]["id"])


async def logs_in(client: PlatformClient, tenant: Tenant, database_id: str) -> None:
    credentials = await client.credentials(tenant, database_id)
    with psycopg.connect(credentials["uri"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (credentials["user"],)


async def test_a_failed_second_rotation_keeps_the_first_ones_password(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "rotated")
    await client.succeeded(tenant, accepted["operation"]["id"])
    database_id = accepted["database"]["id"]
    assert (await rotate(client, tenant, database_id))["status"] == "succeeded"
    await logs_in(client, tenant, database_id)

    for fault, ending in [
        ("rotate_credentials.route_updated", "compensated"),
        ("rotate_credentials.route_updated:transient", "failed"),
    ]:
        stack.stop_process("agent")
        stack.start_process("agent", faults=InjectedFaults(fail_at=fault))
        operation = await rotate(client, tenant, database_id)
        assert operation["status"] == ending, operation
        assert [s["name"] for s in operation["steps"] if s["status"] == "compensated"] == ["password_set"]
        await logs_in(client, tenant, database_id)  # the API still shows the first rotation's password
    stack.stop_process("agent")
    stack.start_process("agent")
    assert (await rotate(client, tenant, database_id))["status"] == "succeeded"
    await logs_in(client, tenant, database_id)
