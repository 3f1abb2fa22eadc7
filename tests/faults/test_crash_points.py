"""Kill the agent at every crash point of the create saga, restart it, and check that exactly
one database and role exist (or none after compensation) and the projection replays equal."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.faults import CRASH_EXIT_CODE, InjectedFaults
from devstack.stack import Stack
from tests.platform_client import PlatformClient
from tests.replay import replay_matches
from tests.stacks import shared_stack

stack = shared_stack()  # each test restarts the agent it crashed, in a project of its own

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
