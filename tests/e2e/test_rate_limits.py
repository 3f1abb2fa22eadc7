"""The plan's request rate, shared by every API process: on the free plan the 61st request in a
minute is a 429 with ``Retry-After`` and the RateLimit fields, whichever process answers and
whichever of the project's tokens asks; moving the project to pro lifts it at once; health needs
no token and is never limited, nor is the admin token."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from devstack.stack import Stack
from infra.processes import free_port, spawn, stop, wait_for_port
from tests.platform_client import PlatformClient

PLAN_RATES = {"PGPLANE_REQUESTS_PER_MINUTE_FREE": "60", "PGPLANE_REQUESTS_PER_MINUTE_PRO": "600"}
"""The plans' own rates (test platforms are otherwise unthrottled: their clients poll)."""


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"PGPLANE_DATABASES_PER_PROJECT_FREE": "2"}


@pytest.fixture
def second_api(stack: Stack) -> Iterator[str]:
    """The platform's API with the plans' rates, and a second API process beside it."""
    stack.stop_process("api")
    stack.start_process("api", PLAN_RATES)
    port = free_port()
    log = stack.log_path("api-2")
    env = stack.env("api", PLAN_RATES | {"PGPLANE_API_PORT": str(port)})
    proc = spawn([sys.executable, "-m", "entrypoints.cli", "api"], log, env=env)
    try:
        wait_for_port(port, proc, log, "the second API")
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        stop(proc)


async def test_the_free_rate_is_shared_by_api_processes_and_tokens_and_pro_lifts_it(
    client: PlatformClient, second_api: str
) -> None:
    tenant = await client.tenant()
    other_token = await client.http.post(
        f"/projects/{tenant.project_id}/tokens", json={"name": "second"}, headers=client.admin
    )
    second = {"Authorization": f"Bearer {other_token.json()['token']}"}
    async with httpx.AsyncClient(base_url=second_api, timeout=30) as other:
        for i in range(60):  # alternately to each API process
            http = client.http if i % 2 else other
            answered = await http.get(f"/projects/{tenant.project_id}", headers=tenant.headers)
            assert answered.status_code == 200, (i, answered.text)
        assert answered.headers["RateLimit-Policy"] == '"per-minute";q=60;w=60'
        assert answered.headers["RateLimit"].startswith('"per-minute";r=0;t=')

        refused = await other.get(f"/projects/{tenant.project_id}", headers=tenant.headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit"].startswith('"per-minute";r=0;')
        shared = await client.http.get(f"/projects/{tenant.project_id}", headers=second)  # the project's limit
        assert shared.status_code == 429

    health = await client.http.get(f"{client.stack.api_url}/healthz")
    assert health.status_code == 200 and "RateLimit" not in health.headers
    assert (await client.http.get("/projects", headers=client.admin)).status_code == 200

    upgraded = await client.http.post(
        f"/admin/projects/{tenant.project_id}/plan", json={"plan": "pro"}, headers=client.admin
    )
    assert upgraded.status_code == 200 and upgraded.json()["plan"] == "pro"
    lifted = await client.http.get(f"/projects/{tenant.project_id}", headers=tenant.headers)
    assert lifted.status_code == 200, lifted.text
    assert lifted.headers["RateLimit-Policy"] == '"per-minute";q=600;w=60'
    audit = await client.http.get("/audit-log", params={"project_id": tenant.project_id}, headers=client.admin)
    (change,) = [e for e in audit.json()["data"] if e["action"] == "project.plan_change"]
    assert change["actor"] == "admin" and change["detail"] == {"plan": "pro", "previous": "free"}


async def test_a_downgrade_over_quota_deletes_nothing_and_refuses_new_databases(client: PlatformClient) -> None:
    tenant = await client.tenant()
    plan = f"/admin/projects/{tenant.project_id}/plan"
    await client.http.post(plan, json={"plan": "pro"}, headers=client.admin)
    made = [await client.create_database(tenant, f"db{i}") for i in range(3)]
    for accepted in made:
        await client.succeeded(tenant, accepted["operation"]["id"])
    downgraded = await client.http.post(plan, json={"plan": "free"}, headers=client.admin)
    assert downgraded.status_code == 200 and downgraded.json()["plan"] == "free"

    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert [d["status"] for d in listed["data"]] == ["available"] * 3  # nothing deleted
    refused = await client.http.post(
        "/databases", json={"project_id": tenant.project_id, "name": "one-more"}, headers=tenant.headers
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "quota_exceeded"
    assert "free plan holds at most 2" in refused.json()["error"]["message"]

    for accepted in made[:2]:
        deleted = await client.http.delete(f"/databases/{accepted['database']['id']}", headers=tenant.headers)
        await client.succeeded(tenant, deleted.json()["operation"]["id"])
    again = await client.create_database(tenant, "one-more")  # back under the limit
    await client.succeeded(tenant, again["operation"]["id"])
