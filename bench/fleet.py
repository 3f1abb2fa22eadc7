"""A host with a fleet: the same operations on an empty host and on one holding ``BENCH_FLEET``
databases (default 1,000), each with an idle tenant session open, in one run.

(a) empty: ``BENCH_N`` (default 20) times in turn: create a database, rotate its credentials,
    delete it, each timed from the POST to the operation's ``succeeded``;
(b) fill: ``BENCH_FLEET`` databases created through the API by 20 clients at once (creates/s
    reported), then one tenant session opened on each and left idle;
(c) full: (a) again, next to the fleet and its idle sessions; then a tenant of the fleet opens
    a second session and queries (it must not wait for a server connection);
and, beside (a) and (c), the raw DDL of each operation (create role, database, revoke; a new
password; drop database and role) through the agent's own statements, ``BENCH_N`` times, and
PgBouncer's ``RELOAD`` (rereading every route): what PostgreSQL and PgBouncer themselves pay for
the fleet.

Prints JSON: p50/p95 per operation for ours and raw, empty and full,
``ratio_p50_fleet_<operation>`` = ours full / ours empty (target ≤ 1.3) with raw's own growth
beside it, the fill rate, the newcomer's connect-and-query time, and the reload times.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
import uuid
from typing import Any

import httpx
import psycopg
import uvloop
from psycopg_pool import AsyncConnectionPool

from bench.provision import summary
from devstack.cluster import Cluster
from devstack.stack import UNTHROTTLED, Stack
from devstack.state import scratch_root
from infra.host_postgres import HostPostgres
from infra.secrets import new_password, scram_verifier

FLEET = int(os.environ.get("BENCH_FLEET", "1000"))
N = int(os.environ.get("BENCH_N", "20"))
CLIENTS = 20
OPERATIONS = ("create", "rotate", "delete")


class Api:
    def __init__(self, http: httpx.AsyncClient, project_id: str) -> None:
        self.http = http
        self.project_id = project_id

    async def wait(self, accepted: httpx.Response) -> None:
        accepted.raise_for_status()
        operation_id = accepted.json()["operation"]["id"]
        while True:
            status = (await self.http.get(f"/operations/{operation_id}", params={"wait": 60})).json()["status"]
            if status == "succeeded":
                return
            if status in ("failed", "compensated"):
                raise RuntimeError(f"operation {operation_id} {status}")

    async def create(self) -> str:
        body = {"project_id": self.project_id, "name": f"b{uuid.uuid4().hex[:12]}"}
        accepted = await self.http.post("/databases", json=body)
        await self.wait(accepted)
        database_id: str = accepted.json()["database"]["id"]
        return database_id


async def timed_lifecycles(api: Api) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    for _ in range(N):
        start = time.perf_counter()
        database_id = await api.create()
        samples["create"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await api.wait(await api.http.post(f"/databases/{database_id}/rotate-credentials"))
        samples["rotate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await api.wait(await api.http.delete(f"/databases/{database_id}"))
        samples["delete"].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in samples.items()}


async def raw_ddl(cluster: Cluster) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=1, max_size=2, open=False) as pool:
        host = HostPostgres(pool)
        for _ in range(N):
            ident = uuid.uuid4().hex
            dbname, role = f"raw_{ident}", f"rawu_{ident}"
            start = time.perf_counter()
            await host.ensure_role(role, verifier=scram_verifier(new_password()), connection_limit=20)
            await host.ensure_database(dbname, owner=role)
            await host.revoke_public(dbname, owner=role)
            samples["create"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await host.set_password(role, verifier=scram_verifier(new_password()))
            samples["rotate"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await host.drop_database(dbname)
            await host.drop_role(role)
            samples["delete"].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in samples.items()}


async def reload_seconds(stack: Stack) -> float:
    bouncer = stack.bouncer()
    try:
        await bouncer.admin("SHOW VERSION")  # the console connection, opened once as the agent keeps it
        times = []
        for _ in range(5):
            start = time.perf_counter()
            await bouncer.admin("RELOAD")
            times.append(time.perf_counter() - start)
    finally:
        await bouncer.close()
    return statistics.median(times)


async def fill(api: Api) -> tuple[list[str], float]:
    queue = list(range(FLEET))
    made: list[str] = []

    async def client() -> None:
        while queue:
            queue.pop()
            made.append(await api.create())

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return made, time.perf_counter() - start


async def idle_sessions(api: Api, database_ids: list[str]) -> list[psycopg.AsyncConnection[Any]]:
    sessions = []
    for database_id in database_ids:
        uri = (await api.http.get(f"/databases/{database_id}/credentials")).json()["uri"]
        session = await psycopg.AsyncConnection.connect(uri, autocommit=True)
        await session.execute("SELECT 1")
        sessions.append(session)
    return sessions


async def newcomer(api: Api, database_id: str) -> float:
    uri = (await api.http.get(f"/databases/{database_id}/credentials")).json()["uri"]
    start = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(uri, connect_timeout=60) as session:
        await session.execute("SELECT count(*) FROM pg_class")
    return time.perf_counter() - start


async def run(stack: Stack) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=120, headers=admin) as http:
        project = (await http.post("/projects", json={"name": "fleet", "plan": "pro"})).raise_for_status().json()
        api = Api(http, project["id"])
        reload_empty = await reload_seconds(stack)
        empty = await timed_lifecycles(api)
        raw_empty = await raw_ddl(stack.cluster)
        fleet, fill_seconds = await fill(api)
        sessions = await idle_sessions(api, fleet)
        try:
            reload_full = await reload_seconds(stack)
            full = await timed_lifecycles(api)
            raw_full = await raw_ddl(stack.cluster)
            second_session = await newcomer(api, fleet[0])
        finally:
            for session in sessions:
                await session.close()
    return {
        "benchmark": "fleet",
        "fleet_databases": FLEET,
        "idle_sessions": len(sessions),
        "fill": {"seconds": round(fill_seconds, 1), "creates_per_second": round(FLEET / fill_seconds, 1)},
        "ours": {"empty_host": empty, "full_host": full},
        "raw": {"empty_host": raw_empty, "full_host": raw_full},
        "pgbouncer_reload_ms": {
            "routes_0": round(reload_empty * 1000, 1),
            f"routes_{FLEET}": round(reload_full * 1000, 1),
        },
        "second_session_on_full_host_ms": round(second_session * 1000, 1),
        **{f"ratio_p50_fleet_{name}": round(full[name]["p50_ms"] / empty[name]["p50_ms"], 2) for name in OPERATIONS},
        "raw_growth": {
            f"ratio_p50_fleet_{name}": round(raw_full[name]["p50_ms"] / raw_empty[name]["p50_ms"], 2)
            for name in OPERATIONS
        },
    }


async def main() -> None:
    root = scratch_root("pgplane-bench-fleet-")
    cluster = Cluster(root, wal_archive=False)
    stack = Stack(
        cluster,
        root / "ours",
        namespace="benchfleet",
        meta_db="bench_fleet_meta",
        ledger_db="bench_fleet_ledger",
        extra_env={"PGPLANE_DATABASES_PER_PROJECT_PRO": "100000", "PGPLANE_HOST_MAX_DATABASES": str(FLEET + N + 10)}
        | UNTHROTTLED,
    )
    try:
        cluster.start()
        stack.start()
        result = await run(stack)
    finally:
        stack.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    uvloop.run(main())
