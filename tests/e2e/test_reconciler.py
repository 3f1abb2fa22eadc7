"""The reconciler end to end: behind pgplane's back a tenant's password is changed in SQL, a
database's role is dropped, a route is taken out of PgBouncer and an unknown database appears.
Each is reported as drift once; the password, the role and the route are put back; the unknown
database is reported and left alone; when an operator removes it, its drift resolves."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devstack.cluster import Cluster
from devstack.stack import Stack
from devstack.state import scratch_root
from infra.pgbouncer import ADMIN_USER
from schemas.events import PLATFORM_PROJECT
from tests.e2e.test_ops import ops
from tests.platform_client import PlatformClient
from tests.replay import replay_matches
from tests.stacks import WITHOUT_SCHEDULER, new_stack


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A data host of its own: the reconciler judges everything on its server, and the shared
    cluster holds every other test's databases."""
    root = scratch_root("pgplane-reconcile-")
    servers = Cluster(root, wal_archive=False)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(own_cluster: Cluster) -> Iterator[Stack]:
    env = {"PGPLANE_STATE_REPORT_SECONDS": "0.5", "PGPLANE_RECONCILE_SECONDS": "0.2"}
    platform = new_stack(own_cluster, env, processes=(*WITHOUT_SCHEDULER, "scheduler"))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


def superuser(stack: Stack, dbname: str, *statements: str) -> None:
    with psycopg.connect(stack.cluster.superuser_dsn(dbname), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def unroute(stack: Stack, dbname: str) -> None:
    """Take one database out of PgBouncer's routes, as a hand edit of its configuration would."""
    routes = stack.pgbouncer_dir / "databases.ini"
    routes.write_text("".join(line for line in routes.read_text().splitlines(True) if not line.startswith(dbname)))
    password = stack.cluster.secrets["pgbouncer_admin_password"]
    with psycopg.connect(
        host="127.0.0.1", port=stack.pgbouncer_port, dbname="pgbouncer", user=ADMIN_USER, password=password
    ) as conn:
        conn.autocommit = True
        conn.execute("RELOAD")


def logs_in(uri: str) -> bool:
    try:
        with psycopg.connect(uri, connect_timeout=5) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


async def drifts_until(stack: Stack, done: Any, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = ops(stack, "drifts", "--all")
        if done(found):
            return found
        assert time.monotonic() < deadline, f"the drifts never settled: {found}"
        await asyncio.sleep(0.3)


def by_kind(drifts: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(d["kind"], d["object"]): d["status"] for d in drifts}


async def test_drift_is_reported_the_safe_kinds_repaired_and_nothing_deleted(
    client: PlatformClient, stack: Stack
) -> None:
    tenant = await client.tenant()
    made = {name: await client.create_database(tenant, name) for name in ("changed", "dropped", "fine")}
    for accepted in made.values():
        await client.succeeded(tenant, accepted["operation"]["id"])
    changed, dropped, fine = (made[n]["database"] for n in ("changed", "dropped", "fine"))
    await asyncio.sleep(1.5)  # reports of the host as pgplane left it
    assert ops(stack, "drifts", "--all") == []
    used = await client.http.get(f"/projects/{tenant.project_id}/usage", headers=tenant.headers)
    assert used.status_code == 200, used.text
    usage = used.json()
    assert usage["databases"] == 3 and usage["storage_bytes"] > 3 * 1_000_000  # an empty database: ~7 MB
    assert usage["reported_at"] is not None and 0 < usage["database_hours"] < 0.1

    orphan = f"db_{uuid.uuid4().hex}"
    superuser(stack, "postgres", f"ALTER ROLE {changed['user']} PASSWORD 'chosen-by-the-tenant'")
    superuser(stack, dropped["dbname"], f"REASSIGN OWNED BY {dropped['user']} TO CURRENT_USER")
    superuser(stack, "postgres", f"DROP OWNED BY {dropped['user']}", f"DROP ROLE {dropped['user']}")
    superuser(stack, "postgres", f"CREATE DATABASE {orphan}")
    unroute(stack, fine["dbname"])

    expected = {
        ("verifier_changed", changed["user"]): "repaired",
        ("role_missing", dropped["user"]): "repaired",
        ("owner_changed", dropped["dbname"]): "repaired",  # REASSIGN OWNED gave the database away
        ("route_missing", fine["dbname"]): "repaired",
        ("database_orphaned", orphan): "open",
    }
    drifts = await drifts_until(stack, lambda found: by_kind(found) == expected)
    assert {d["object"]: d["database_id"] for d in drifts} == {
        changed["user"]: changed["id"],
        dropped["user"]: dropped["id"],
        dropped["dbname"]: dropped["id"],
        fine["dbname"]: fine["id"],
        orphan: None,
    }
    for database in (changed, dropped, fine):
        assert logs_in((await client.credentials(tenant, database["id"]))["uri"]), database["name"]
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dropped["dbname"],)
        ).fetchone()
        kept = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (orphan,)).fetchone()
    assert owner == (dropped["user"],) and kept == (1,)  # the orphan is reported, never dropped

    await asyncio.sleep(2)  # several more reports: each drift was reported once
    audit = await client.http.get("/audit-log", params={"project_id": tenant.project_id}, headers=tenant.headers)
    entries = [e for e in audit.json()["data"] if e["action"] == "host.drift"]
    tenant_drift = [(e["detail"]["kind"], e["outcome"]) for e in entries]
    assert sorted(tenant_drift) == [
        ("owner_changed", "detected"),
        ("owner_changed", "repaired"),
        ("role_missing", "detected"),
        ("role_missing", "repaired"),
        ("route_missing", "detected"),
        ("route_missing", "repaired"),
        ("verifier_changed", "detected"),
        ("verifier_changed", "repaired"),
    ]
    platform = await client.http.get("/audit-log", params={"project_id": str(PLATFORM_PROJECT)}, headers=client.admin)
    orphan_drift = [e["outcome"] for e in platform.json()["data"] if e["action"] == "host.drift"]
    assert orphan_drift == ["detected"]

    metrics = await client.http.get(f"{stack.api_url}/metrics", headers=client.admin)
    assert 'pgplane_drifts_open{kind="database_orphaned"} 1.0' in metrics.text.splitlines()

    superuser(stack, "postgres", f"DROP DATABASE {orphan}")  # the operator's decision
    await drifts_until(stack, lambda found: by_kind(found)[("database_orphaned", orphan)] == "resolved")
    assert ops(stack, "status")["drifts_open"] == 0
    replay_matches(stack)
