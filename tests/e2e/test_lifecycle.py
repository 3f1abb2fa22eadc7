"""What a new user does: create, connect, rotate, reset, delete, all through HTTP and PgBouncer."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from infra.host_postgres import WARM_PREFIX
from tests.platform_client import PlatformClient, new_key
from tests.replay import replay_matches
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own


def connect(uri: str) -> psycopg.Connection:
    return psycopg.connect(uri, connect_timeout=5, autocommit=True)


def host_oids(client: PlatformClient, dbname: str, role: str) -> tuple[int, int]:
    """The database's and the role's OIDs (a rename keeps them)."""
    with psycopg.connect(client.stack.cluster.superuser_dsn()) as conn:
        row = conn.execute(
            "SELECT (SELECT oid FROM pg_database WHERE datname = %s), (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (dbname, role),
        ).fetchone()
    assert row is not None and None not in row
    return int(row[0]), int(row[1])


async def until_dropped(client: PlatformClient, *, database: int, role: int | None = None) -> None:
    async with asyncio.timeout(30):
        while True:
            with psycopg.connect(client.stack.cluster.superuser_dsn()) as conn:
                row = conn.execute(
                    "SELECT EXISTS (SELECT FROM pg_database WHERE oid = %s)"
                    " OR EXISTS (SELECT FROM pg_roles WHERE oid = %s)",
                    (database, role),
                ).fetchone()
            if row == (False,):
                return
            await asyncio.sleep(0.1)


async def test_database_lifecycle(client: PlatformClient) -> None:
    tenant = await client.tenant()
    key = new_key()
    accepted = await client.create_database(tenant, "app", key=key)
    again = await client.create_database(tenant, "app", key=key)
    assert again["operation"]["id"] == accepted["operation"]["id"]
    database_id = accepted["database"]["id"]

    # read your writes: the operation is there right after the 202
    first = await client.http.get(f"/operations/{accepted['operation']['id']}", headers=tenant.headers)
    assert first.status_code == 200
    created = await client.wait(tenant, accepted["operation"]["id"])
    assert created["status"] == "succeeded", created
    assert [s["name"] for s in created["steps"]] == [
        "role_created",
        "database_created",
        "public_revoked",
        "route_added",
        "login_verified",
    ]
    database = (await client.http.get(f"/databases/{database_id}", headers=tenant.headers)).json()
    assert database["status"] == "available" and database["port"] == client.stack.pgbouncer_port

    old = await client.credentials(tenant, database_id)
    with connect(old["uri"]) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'hello')")
        assert conn.execute("SELECT body FROM notes").fetchone() == ("hello",)

    rotate = await client.http.post(f"/databases/{database_id}/rotate-credentials", headers=tenant.headers)
    assert rotate.status_code == 202, rotate.text
    await client.succeeded(tenant, rotate.json()["operation"]["id"])
    new = await client.credentials(tenant, database_id)
    assert new["password"] != old["password"]
    with pytest.raises(psycopg.OperationalError):
        connect(old["uri"]).close()
    with connect(new["uri"]) as conn:
        assert conn.execute("SELECT body FROM notes").fetchone() == ("hello",)

    before_reset = host_oids(client, database["dbname"], database["user"])
    reset = await client.http.post(f"/databases/{database_id}/reset", headers=tenant.headers)
    assert reset.status_code == 202, reset.text
    await client.succeeded(tenant, reset.json()["operation"]["id"])
    with connect(new["uri"]) as conn:
        assert conn.execute("SELECT to_regclass('notes')").fetchone() == (None,)
    await until_dropped(client, database=before_reset[0])  # the old one, set aside, is dropped in the background

    before_delete = host_oids(client, database["dbname"], database["user"])

    delete = await client.http.delete(f"/databases/{database_id}", headers=tenant.headers)
    assert delete.status_code == 202, delete.text
    await client.succeeded(tenant, delete.json()["operation"]["id"])
    with pytest.raises(psycopg.OperationalError):
        connect(new["uri"]).close()
    assert client.host_has(database["dbname"], database["user"]) == (0, 0)
    assert (await client.http.get(f"/databases/{database_id}", headers=tenant.headers)).json()["status"] == "deleted"
    await until_dropped(client, database=before_delete[0], role=before_delete[1])  # the space is freed too

    audit = (await client.http.get("/audit-log", headers=tenant.headers)).json()
    outcomes = {(e["action"], e["outcome"]) for e in audit["data"]}
    for action in ("database.create", "database.rotate_credentials", "database.reset", "database.delete"):
        assert (action, "requested") in outcomes and (action, "succeeded") in outcomes
    assert "password" not in str(audit).lower()
    replay_matches(client.stack)


async def test_second_operation_waits_for_the_first(client: PlatformClient) -> None:
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "busy")
    response = await client.http.post(f"/databases/{accepted['database']['id']}/reset", headers=tenant.headers)
    if response.status_code != 409:  # the create may already have finished on a fast machine
        assert response.status_code == 202
    else:
        assert response.json()["error"]["code"] == "operation_in_progress"
    await client.wait(tenant, accepted["operation"]["id"])


async def test_a_wait_answers_once_the_operation_has_ended(client: PlatformClient) -> None:
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "waited")
    url = f"/operations/{accepted['operation']['id']}"
    ended = await client.http.get(url, params={"wait": 60}, headers=tenant.headers)
    assert ended.status_code == 200 and ended.json()["status"] == "succeeded", ended.text
    assert [s["status"] for s in ended.json()["steps"]] == ["completed"] * 5

    again = await client.http.get(url, params={"wait": 60}, headers=tenant.headers)
    assert again.json() == ended.json()
    too_long = await client.http.get(url, params={"wait": 61}, headers=tenant.headers)
    assert too_long.status_code == 422 and "wait" in too_long.text, too_long.text
    other = await client.tenant()
    hidden = await client.http.get(url, params={"wait": 5}, headers=other.headers)
    assert hidden.status_code == 404, hidden.text


def warm_databases(client: PlatformClient) -> dict[int, str]:
    """The host's warm databases by OID (a rename keeps the OID)."""
    with psycopg.connect(client.stack.cluster.superuser_dsn()) as conn:
        rows = conn.execute("SELECT oid, datname FROM pg_database WHERE starts_with(datname, %s)", (WARM_PREFIX,))
        return {int(oid): str(name) for oid, name in rows.fetchall()}


async def until_warm(client: PlatformClient, count: int) -> dict[int, str]:
    async with asyncio.timeout(60):
        while len(warm := warm_databases(client)) < count:
            await asyncio.sleep(0.1)
    return warm


async def test_a_create_takes_a_warm_database_and_the_agent_makes_the_next(client: PlatformClient) -> None:
    tenant = await client.tenant()
    warm = await until_warm(client, 2)  # the setting's default
    accepted = await client.create_database(tenant, "warm")
    await client.succeeded(tenant, accepted["operation"]["id"])
    database = (await client.http.get(f"/databases/{accepted['database']['id']}", headers=tenant.headers)).json()
    with psycopg.connect(client.stack.cluster.superuser_dsn()) as conn:
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (database["dbname"],)).fetchone()
    assert row is not None and int(row[0]) in warm  # renamed, not copied from the template
    with connect((await client.credentials(tenant, database["id"]))["uri"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database["dbname"],)
    again = await until_warm(client, 2)
    assert int(row[0]) not in again
