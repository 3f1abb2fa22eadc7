"""Provisioning latency: raw DDL + PgBouncer reload vs our end-to-end path, in one run.

(a) raw: the same statements the agent runs (role with SCRAM verifier, database, revoke,
    PgBouncer route + RELOAD, a login through PgBouncer) straight through psycopg;
(b) ours: POST /databases → GET /operations/{id}?wait=60, which answers once it has ended, ``succeeded``.
Each sequentially (N times), 50 at once, then sustained: ``BENCH_CLIENTS`` clients (default
20) creating one database after another for ``BENCH_SUSTAIN_SECONDS`` (default 60), counted as
creates finished per second (``BENCH_AGENT_CONCURRENCY`` sets the agent's concurrency). The same
settings, a fresh cluster for each path, one after the other (PostgreSQL's DDL slows down as the
catalog grows, so neither path runs on the other's databases). Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from devstack.cluster import Cluster
from devstack.stack import UNTHROTTLED, Stack
from devstack.state import scratch_root
from infra.host_postgres import HostPostgres, check_login
from infra.pgbouncer import Route
from infra.secrets import new_password, scram_verifier

N = int(os.environ.get("BENCH_N", "50"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "50"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "20"))
SUSTAIN_SECONDS = float(os.environ.get("BENCH_SUSTAIN_SECONDS", "60"))
WARMUP = 5
"""Creates made and not counted before each path's measurements (first connections, cold caches)."""
CONCURRENCY = os.environ.get("BENCH_AGENT_CONCURRENCY", "")
"""The agent's ``PGPLANE_AGENT_CONCURRENCY`` for our side (default: the setting's default)."""


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 1),
    }


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def measure(fn: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    for _ in range(WARMUP):
        await fn()
    sequential = [await timed(fn) for _ in range(N)]
    concurrent = await asyncio.gather(*(timed(fn) for _ in range(CONCURRENT)), return_exceptions=True)
    failures = [c for c in concurrent if isinstance(c, BaseException)]
    return {
        "sequential": summary(sequential),
        "concurrent": summary([c for c in concurrent if isinstance(c, float)]) | {"failed": len(failures)},
        "sustained": await sustained(fn),
    }


async def sustained(fn: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """``CLIENTS`` clients, each creating until the time is up; creates finished per second."""
    finished, failed = 0, 0
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + SUSTAIN_SECONDS

    async def client() -> None:
        nonlocal finished, failed
        while time.perf_counter() < deadline:
            try:
                await fn()
                finished += 1
            except Exception as exc:
                failed += 1
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - start
    return {
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "creates_per_second": round(finished / elapsed, 2),
        "failed": failed,
        "errors": dict(errors.most_common(3)),
    }


async def raw_path(stack: Stack) -> dict[str, Any]:
    cluster = stack.cluster
    bouncer = stack.bouncer()
    routes: list[Route] = []
    async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=2, max_size=12, open=False) as pool:
        host = HostPostgres(pool)
        await host.lock_down()  # the tenants' group role, as the agent makes it when it starts

        async def provision() -> None:
            ident, password = uuid.uuid4().hex, new_password()
            dbname, role, verifier = f"db_{ident}", f"u_{ident}", scram_verifier(password)
            await host.ensure_role(role, verifier=verifier, connection_limit=20)
            await host.ensure_database(dbname, owner=role)
            await host.revoke_public(dbname, owner=role)
            routes.append(
                Route(database_id=uuid.uuid4(), dbname=dbname, role=role, verifier=verifier, max_connections=20)
            )
            await bouncer.apply(list(routes))
            await check_login(host="127.0.0.1", port=stack.pgbouncer_port, dbname=dbname, user=role, password=password)

        try:
            return await measure(provision)
        finally:
            await bouncer.close()


async def our_path(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=120) as http:
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        project = (await http.post("/projects", json={"name": "bench", "plan": "pro"}, headers=admin)).json()

        async def provision() -> None:
            body = {"project_id": project["id"], "name": f"b{uuid.uuid4().hex[:12]}"}
            accepted = await http.post("/databases", json=body, headers=admin)
            accepted.raise_for_status()
            operation_id = accepted.json()["operation"]["id"]
            while True:
                waited = await http.get(f"/operations/{operation_id}", params={"wait": 60}, headers=admin)
                status = waited.json()["status"]
                if status == "succeeded":
                    return
                if status in ("failed", "compensated"):
                    raise RuntimeError(f"operation {operation_id} {status}")

        return await measure(provision)


async def raw_on_fresh_cluster(root: Path) -> dict[str, Any]:
    cluster = Cluster(root, wal_archive=False)
    cluster.start()
    stack = Stack(cluster, root / "raw", namespace="benchraw", meta_db="bench_raw_meta", ledger_db="bench_raw_ledger")
    try:
        stack.start_servers()
        await asyncio.sleep(2)  # as long as our side gives its processes
        return await raw_path(stack)
    finally:
        stack.stop()
        cluster.stop()


async def ours_on_fresh_cluster(root: Path) -> dict[str, Any]:
    cluster = Cluster(root, wal_archive=False)
    cluster.start()
    stack = Stack(
        cluster,
        root / "ours",
        namespace="bench",
        meta_db="bench_meta",
        ledger_db="bench_ledger",
        extra_env={"PGPLANE_DATABASES_PER_PROJECT_PRO": "100000"}
        | UNTHROTTLED
        | ({"PGPLANE_AGENT_CONCURRENCY": CONCURRENCY} if CONCURRENCY else {}),
    )
    try:
        stack.start()
        await asyncio.sleep(2)
        return await our_path(stack)
    finally:
        stack.stop()
        cluster.stop()


async def main() -> None:
    root = scratch_root("pgplane-bench-")
    try:
        raw = await raw_on_fresh_cluster(root / "raw")
        our = await ours_on_fresh_cluster(root / "ours")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "provision",
                "raw": raw,
                "ours": our,
                "ratio_p50_sequential": round(our["sequential"]["p50_ms"] / raw["sequential"]["p50_ms"], 2),
                "ratio_p50_concurrent": round(our["concurrent"]["p50_ms"] / raw["concurrent"]["p50_ms"], 2),
                "ratio_sustained_creates": round(
                    our["sustained"]["creates_per_second"] / raw["sustained"]["creates_per_second"], 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
