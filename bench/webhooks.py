"""Webhook delivery: throughput and latency from an event's commit to a receiver on loopback,
against a raw httpx POST loop to the same receiver, in one run.

A receiver (asyncio, HTTP/1.1 keep-alive, answers 204) records when each ``webhook-id`` arrives.
One endpoint points at it; events are written straight into the ``events`` table (what the
projector commits), so the figure is the dispatcher's alone:

(a) throughput: ``BENCH_EVENTS`` events (default 2,000) over ``BENCH_DATABASES`` databases
    (default 100; one database's events go out one at a time, in order) committed at once;
    seconds until the receiver has them all;
(b) latency: ``BENCH_SINGLES`` events (default 100) committed one at a time, 50 ms apart;
    commit → arrival, p50/p99;
(c) raw: the same number of signed POSTs as (a), one after another with one httpx client, and
    (b)'s POSTs timed singly.

Prints JSON with deliveries/s and p50/p99 for ours and raw, ``ratio_webhook_throughput`` = raw/s
over ours/s and ``ratio_webhook_latency_p50`` = ours p50 / raw p50.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import uvloop
from psycopg.types.json import Jsonb

from devstack.cluster import Cluster
from devstack.stack import PROCESSES, UNTHROTTLED, Stack
from devstack.state import scratch_root
from infra.webhook_signing import signed_headers

EVENTS = int(os.environ.get("BENCH_EVENTS", "2000"))
DATABASES = int(os.environ.get("BENCH_DATABASES", "100"))
SINGLES = int(os.environ.get("BENCH_SINGLES", "100"))


class Receiver:
    """Arrival time (``time.monotonic``) of each webhook-id."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
                lowered = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(lowered.get("content-length", "0")))
                self.arrived.setdefault(lowered.get("webhook-id", ""), time.monotonic())
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client went away, or the bench is over

    async def wait_for(self, ids: list[str], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not all(i in self.arrived for i in ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sum(i in self.arrived for i in ids)} of {len(ids)} events arrived")
            await asyncio.sleep(0.005)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
    }


def event_rows(project_id: uuid.UUID, first: int, count: int, databases: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        database_id = databases[n % len(databases)]
        data = {"project_id": str(project_id), "database_id": str(database_id), "operation_id": str(uuid.uuid4())}
        rows.append(
            (
                project_id,
                first + n,
                uuid.uuid4(),
                "database.created",
                f"databases/{database_id}",
                datetime.now(UTC),
                Jsonb(data),
            )
        )
    return rows


INSERT = "INSERT INTO events (project_id, sequence, id, type, subject, time, data) VALUES (%s, %s, %s, %s, %s, %s, %s)"


async def ours(stack: Stack, receiver: Receiver, secret_holder: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=60) as http:
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        project = (await http.post("/projects", json={"name": "bench", "plan": "pro"}, headers=admin)).json()
        url = f"http://127.0.0.1:{receiver.port}/hooks"
        endpoint = await http.post("/webhooks", json={"project_id": project["id"], "url": url}, headers=admin)
        endpoint.raise_for_status()
        secret_holder["secret"] = endpoint.json()["secret"]
    project_id = uuid.UUID(project["id"])
    databases = [uuid.uuid4() for _ in range(DATABASES)]
    dsn = stack.cluster.superuser_dsn(stack.meta_db)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = event_rows(project_id, 1, EVENTS, databases)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(INSERT, rows)
        committed = time.monotonic()
        await receiver.wait_for([str(r[2]) for r in rows])
        seconds = time.monotonic() - committed
        latencies = []
        for n in range(SINGLES):
            (row,) = event_rows(project_id, EVENTS + 1 + n, 1, databases)
            await conn.execute(INSERT, row)
            committed = time.monotonic()
            await receiver.wait_for([str(row[2])])
            latencies.append(receiver.arrived[str(row[2])] - committed)
            await asyncio.sleep(0.05)
    return {
        "events": EVENTS,
        "seconds": round(seconds, 2),
        "deliveries_per_second": round(EVENTS / seconds, 1),
        "latency": percentiles(latencies),
    }


async def raw(receiver: Receiver, secret: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    body = json.dumps({"type": "database.created", "data": {"database_id": str(uuid.uuid4())}}).encode()

    async def post(client: httpx.AsyncClient) -> None:
        headers = signed_headers([secret], msg_id=str(uuid.uuid4()), timestamp=int(time.time()), body=body)
        (await client.post(url, content=body, headers=headers)).raise_for_status()

    async with httpx.AsyncClient(trust_env=False) as client:
        start = time.monotonic()
        for _ in range(EVENTS):
            await post(client)
        seconds = time.monotonic() - start
        latencies = []
        for _ in range(SINGLES):
            started = time.monotonic()
            await post(client)
            latencies.append(time.monotonic() - started)
    return {
        "events": EVENTS,
        "seconds": round(seconds, 2),
        "deliveries_per_second": round(EVENTS / seconds, 1),
        "latency": percentiles(latencies),
    }


async def main() -> None:
    root = scratch_root("pgplane-bench-webhooks-")
    cluster = Cluster(root, wal_archive=False)
    stack = Stack(
        cluster,
        root / "ours",
        namespace="benchhooks",
        meta_db="bench_hooks_meta",
        ledger_db="bench_hooks_ledger",
        processes=tuple(p for p in PROCESSES if p != "scheduler"),
        extra_env=UNTHROTTLED,
    )
    receiver = Receiver()
    server = await receiver.start()
    secret: dict[str, str] = {}
    try:
        cluster.start()
        stack.start()
        our = await ours(stack, receiver, secret)
        baseline = await raw(receiver, secret["secret"])
    finally:
        stack.stop()
        cluster.stop()
        server.close()
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "webhooks",
                "ours": our,
                "raw": baseline,
                "ratio_webhook_throughput": round(baseline["deliveries_per_second"] / our["deliveries_per_second"], 2),
                "ratio_webhook_latency_p50": round(our["latency"]["p50_ms"] / baseline["latency"]["p50_ms"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    uvloop.run(main())
