"""Provisioning latency: raw DDL + PgBouncer reload vs our end-to-end path, in one run.

(a) raw: the statements of a create with nothing made ahead (role with SCRAM verifier,
    ``CREATE DATABASE``, revoke, PgBouncer route (its line written beside the others) + RELOAD, a
    login through PgBouncer) straight through psycopg;
(b) ours: POST /databases → GET /operations/{id}?wait=60, which answers once it has ended,
    ``succeeded`` (the agent renames a warm database when it has one, and makes another meanwhile).
Each sequentially (N times), 50 at once (``BENCH_BURSTS`` bursts of ``BENCH_CONCURRENT``, default 4
of 50), then sustained: ``BENCH_CLIENTS`` clients (default 20) creating one database after another
for ``BENCH_SUSTAIN_SECONDS`` (default 60), counted as creates finished per second
(``BENCH_AGENT_CONCURRENCY`` and ``BENCH_AGENT_WARM_DATABASES`` set the agent's concurrency and its
warm databases).

Each path has its own fresh cluster (PostgreSQL's DDL slows down as the catalog grows, so
neither path runs on the other's databases), both up at once, and the two take turns: the
sequential creates alternate one by one; the bursts alternate which path goes first (the second
runs on the disk as the first left it: the files it just made, its writes not yet written back),
and each path's figure is the median of its bursts' p50s; the sustained load runs raw for half
its time, ours for all of it, then raw for the other half. What the machine does meanwhile (the
disk's fsync time; the file system's inode allocation, which can slow for a minute after many
files are deleted) then weighs on both sides alike. A sustained client's last create is counted,
and the time runs until it ends: raw, in two halves, pays that tail twice.
Prints JSON.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
from psycopg_pool import AsyncConnectionPool

from devstack.cluster import Cluster
from devstack.stack import UNTHROTTLED, Stack
from devstack.state import scratch_root
from infra.host_postgres import HostPostgres, check_login
from infra.pgbouncer import Route
from infra.secrets import new_password, scram_verifier

N = int(os.environ.get("BENCH_N", "50"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "50"))
BURSTS = int(os.environ.get("BENCH_BURSTS", "4"))
"""Bursts of ``CONCURRENT`` creates per path, the paths taking turns to go first."""
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "20"))
SUSTAIN_SECONDS = float(os.environ.get("BENCH_SUSTAIN_SECONDS", "60"))
WARMUP = 5
"""Creates made and not counted before each path's measurements (first connections, cold caches)."""
CONCURRENCY = os.environ.get("BENCH_AGENT_CONCURRENCY", "")
"""The agent's ``PGPLANE_AGENT_CONCURRENCY`` for our side (default: the setting's default)."""
WARM = os.environ.get("BENCH_AGENT_WARM_DATABASES", "")
"""The agent's ``PGPLANE_AGENT_WARM_DATABASES`` for our side (default: the setting's default)."""


Provision = Callable[[], Awaitable[None]]
"""One create on one path, returning when the database is usable."""


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 1),
    }


async def timed(fn: Provision) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def at_once(fn: Provision) -> dict[str, Any]:
    results = await asyncio.gather(*(timed(fn) for _ in range(CONCURRENT)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    return summary([r for r in results if isinstance(r, float)]) | {"failed": len(failures)}


def bursts_summary(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several bursts of one path: the median of their p50s (what the ratio uses), and each burst's."""
    return {
        "bursts": len(bursts),
        "p50_ms": round(statistics.median(burst["p50_ms"] for burst in bursts), 1),
        "p50_ms_each": [burst["p50_ms"] for burst in bursts],
        "p95_ms_each": [burst["p95_ms"] for burst in bursts],
        "failed": sum(burst["failed"] for burst in bursts),
    }


@dataclass
class Sustained:
    """Creates finished (and failed) by ``CLIENTS`` clients over some seconds."""

    finished: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: Sustained) -> Sustained:
        return Sustained(
            self.finished + other.finished,
            self.failed + other.failed,
            self.seconds + other.seconds,
            self.errors + other.errors,
        )

    def report(self) -> dict[str, Any]:
        return {
            "clients": CLIENTS,
            "seconds": round(self.seconds, 1),
            "creates_per_second": round(self.finished / self.seconds, 2),
            "failed": self.failed,
            "errors": dict(self.errors.most_common(3)),
        }


async def sustained(fn: Provision, seconds: float) -> Sustained:
    """``CLIENTS`` clients, each creating until ``seconds`` are up (its last create is counted:
    the time runs until every client has finished)."""
    result = Sustained()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            try:
                await fn()
                result.finished += 1
            except Exception as exc:
                result.failed += 1
                result.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    result.seconds = time.perf_counter() - start
    return result


def in_turn(paths: dict[str, Provision], i: int) -> list[tuple[str, Provision]]:
    """The paths in order the ``i``-th time, the other way round the time after."""
    turns = list(paths.items())
    return turns if i % 2 == 0 else turns[::-1]


async def compare(raw: Provision, ours: Provision) -> dict[str, dict[str, Any]]:
    """Both paths, taking turns (see the module's docstring)."""
    paths = {"raw": raw, "ours": ours}
    for _ in range(WARMUP):
        for fn in paths.values():
            await fn()
    sequential: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(N):
        for name, fn in in_turn(paths, i):
            sequential[name].append(await timed(fn))
    bursts: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for i in range(BURSTS):
        for name, fn in in_turn(paths, i):
            bursts[name].append(await at_once(fn))
    half = SUSTAIN_SECONDS / 2
    raw_first = await sustained(raw, half)
    ours_all = await sustained(ours, SUSTAIN_SECONDS)
    load = {"raw": raw_first + await sustained(raw, half), "ours": ours_all}
    return {
        name: {
            "sequential": summary(sequential[name]),
            "concurrent": bursts_summary(bursts[name]),
            "sustained": load[name].report(),
        }
        for name in paths
    }


@asynccontextmanager
async def raw_path(root: Path) -> AsyncIterator[Provision]:
    cluster = Cluster(root, wal_archive=False)
    cluster.start()
    stack = Stack(cluster, root / "raw", namespace="benchraw", meta_db="bench_raw_meta", ledger_db="bench_raw_ledger")
    try:
        stack.start_servers()
        bouncer = stack.bouncer()
        bouncer.write_files([])
        async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=2, max_size=12, open=False) as pool:
            host = HostPostgres(pool)
            await host.lock_down()  # the tenants' group role, as the agent makes it when it starts

            async def provision() -> None:
                ident, password = uuid.uuid4().hex, new_password()
                dbname, role, verifier = f"db_{ident}", f"u_{ident}", scram_verifier(password)
                await host.ensure_role(role, verifier=verifier, connection_limit=20)
                await host.ensure_database(dbname, owner=role)
                await host.revoke_public(dbname, owner=role)
                route = Route(database_id=uuid.uuid4(), dbname=dbname, role=role, verifier=verifier, max_connections=20)

                async def new_route() -> Route:
                    return route

                await bouncer.apply_one(dbname, new_route)
                await check_login(
                    host="127.0.0.1", port=stack.pgbouncer_port, dbname=dbname, user=role, password=password
                )

            try:
                yield provision
            finally:
                await bouncer.close()
    finally:
        stack.stop()
        cluster.stop()


@asynccontextmanager
async def our_path(root: Path) -> AsyncIterator[Provision]:
    cluster = Cluster(root, wal_archive=False)
    cluster.start()
    stack = Stack(
        cluster,
        root / "ours",
        namespace="bench",
        meta_db="bench_meta",
        ledger_db="bench_ledger",
        extra_env={"PGPLANE_DATABASES_PER_PROJECT_PRO": "100000", "PGPLANE_HOST_MAX_DATABASES": "100000"}
        | UNTHROTTLED
        | ({"PGPLANE_AGENT_CONCURRENCY": CONCURRENCY} if CONCURRENCY else {})
        | ({"PGPLANE_AGENT_WARM_DATABASES": WARM} if WARM else {}),
    )
    try:
        stack.start()
        async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=120) as http:
            admin = {"Authorization": f"Bearer {stack.admin_token}"}
            created = await http.post("/projects", json={"name": "bench", "plan": "pro"}, headers=admin)
            project_id = created.raise_for_status().json()["id"]

            async def provision() -> None:
                body = {"project_id": project_id, "name": f"b{uuid.uuid4().hex[:12]}"}
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

            yield provision
    finally:
        stack.stop()
        cluster.stop()


async def main() -> None:
    root = scratch_root("pgplane-bench-")
    try:
        async with raw_path(root / "raw") as raw, our_path(root / "ours") as ours:
            await asyncio.sleep(2)  # our processes connect and subscribe
            result = await compare(raw, ours)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    raw_result, our = result["raw"], result["ours"]
    print(
        json.dumps(
            {
                "benchmark": "provision",
                "raw": raw_result,
                "ours": our,
                "ratio_p50_sequential": round(our["sequential"]["p50_ms"] / raw_result["sequential"]["p50_ms"], 2),
                "ratio_p50_concurrent": round(our["concurrent"]["p50_ms"] / raw_result["concurrent"]["p50_ms"], 2),
                "ratio_sustained_creates": round(
                    our["sustained"]["creates_per_second"] / raw_result["sustained"]["creates_per_second"], 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    uvloop.run(main())
