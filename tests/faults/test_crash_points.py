"""Kill the agent at every crash point of the create saga, restart it, and check that exactly
one database and role exist (or none after compensation) and the projection replays equal; and
at every crash point of the suspend saga: it finishes, the role refuses logins, the data stays."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from devstack.faults import CRASH_EXIT_CODE, InjectedFaults
from devstack.stack import Stack
from tests.e2e.test_accounts import eventually, sign_up
from tests.platform_client import PlatformClient, Tenant
from tests.replay import replay_matches
from tests.stacks import shared_stack

# Each test restarts the agent it crashed, in a project of its own. The command the dead agent held
# comes back when its ack wait runs out: 2 s here (the agent tells the server it is still at work
# every third of it).
stack = shared_stack({"PGPLANE_ACK_WAIT_SECONDS": "2"})

CREATE_STEPS = ["role_created", "database_created", "public_revoked", "route_added", "login_verified"]
FORWARD_POINTS = [f"create.{step}.{when}" for step in CREATE_STEPS for when in ("done", "recorded")]
UNDO_POINTS = [f"create.{step}.undone" for step in CREATE_STEPS[:4]]


async def crash_and_restart(
    client: PlatformClient, stack: Stack, crash_at: str, fail_at: str | None = None
) -> dict[str, Any]:
    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(crash_at=crash_at, fail_at=fail_at))
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "crashy")
    assert stack.procs["agent"].wait(timeout=60) == CRASH_EXIT_CODE
    stack.start_process("agent", faults=InjectedFaults(fail_at=fail_at))
    operation = await client.wait(tenant, accepted["operation"]["id"])
    operation["database"] = accepted["database"]
    if fail_at is not None:  # the module's next test finds the agent as it was: without faults
        stack.stop_process("agent")
        stack.start_process("agent")
    return operation


@pytest.mark.parametrize("crash_at", FORWARD_POINTS)
async def test_crash_in_create_saga_resumes(client: PlatformClient, stack: Stack, crash_at: str) -> None:
    operation = await crash_and_restart(client, stack, crash_at)
    assert operation["status"] == "succeeded", operation
    database = operation["database"]
    assert client.host_has(database["dbname"], database["user"]) == (1, 1)
    assert client.routed(database["dbname"])
    replay_matches(stack)


@pytest.mark.parametrize("crash_at", UNDO_POINTS)
async def test_crash_during_compensation_finishes_it(client: PlatformClient, stack: Stack, crash_at: str) -> None:
    operation = await crash_and_restart(client, stack, crash_at, fail_at="create.login_verified")
    assert operation["status"] == "compensated", operation
    database = operation["database"]
    assert client.host_has(database["dbname"], database["user"]) == (0, 0)
    assert not client.routed(database["dbname"])
    replay_matches(stack)


SUSPEND_POINTS = [
    f"suspend.{step}.{when}" for step in ("logins_refused", "sessions_ended") for when in ("done", "recorded")
]


@pytest.mark.parametrize("crash_at", SUSPEND_POINTS)
async def test_crash_in_suspend_saga_resumes(client: PlatformClient, stack: Stack, crash_at: str) -> None:
    owner = await sign_up(client, f"{uuid.uuid4().hex[:8]}@example.com", "Owner")
    org_id = (await owner.post("/orgs", {"name": "Crashy"})).json()["id"]
    project = await client.http.post("/projects", json={"name": "app", "organization_id": org_id}, headers=client.admin)
    project_id = project.json()["id"]
    assert await eventually(lambda: _projected(client, project_id))
    body = {"name": "ci", "scopes": ["read", "write"]}
    token = (await client.http.post(f"/projects/{project_id}/tokens", json=body, headers=client.admin)).json()
    tenant = Tenant(project_id, token["token"])
    accepted = await client.create_database(tenant, "kept")
    await client.succeeded(tenant, accepted["operation"]["id"])
    database = accepted["database"]

    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(crash_at=crash_at))
    suspended = await client.http.post(f"/admin/organizations/{org_id}/suspend", json={}, headers=client.admin)
    assert suspended.status_code == 200, suspended.text
    assert stack.procs["agent"].wait(timeout=60) == CRASH_EXIT_CODE
    stack.start_process("agent")
    operation_id = (await client.http.get(f"/databases/{database['id']}", headers=tenant.headers)).json()
    operation = await client.wait(tenant, operation_id["last_operation_id"])
    assert (operation["kind"], operation["status"]) == ("suspend", "succeeded"), operation
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (database["user"],)).fetchone()
    assert row == (False,)
    assert client.host_has(database["dbname"], database["user"]) == (1, 1)  # the data stays
    replay_matches(stack)


async def _projected(client: PlatformClient, project_id: str) -> bool:
    return bool((await client.http.get(f"/projects/{project_id}", headers=client.admin)).status_code == 200)
