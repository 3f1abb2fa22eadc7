"""Projector throughput: events from the stream into the read model and the audit log, against
the same rows written straight into the same tables, in one run.

``BENCH_EVENTS`` events (default 100,000) are published into the events stream first: the
lifecycles the platform really produces, per database a create (requested, started, five steps,
created), a credentials read and a backup (requested, started, three steps, completed), and a
project per hundred databases. Then:

(a) ours: the projector process's loop (``run_projector``), from start until its checkpoint
    reaches the last event; every batch applies its events, the audit rows and the checkpoint in
    one transaction and acks after the commit, as in production;
(b) raw: the rows (a) produced, read back with ``COPY ... TO`` and written with ``COPY ... FROM``
    into empty copies of the same tables, in one transaction: the fastest plain PostgreSQL path
    to the same end state;
(c) replay: ``pgplane replay projection`` (rebuild into a fresh schema, compare by hash).

Prints JSON: events/s of (a) and (c), (b)'s time, and ``ratio_projector`` = (a) time / (b) time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import psycopg
import sqlalchemy as sa
import uvloop

from devstack.cluster import Cluster
from devstack.stack import Stack
from devstack.state import scratch_root
from entrypoints.operator import replay
from entrypoints.processes.projector import run_projector
from infra.metadata.engine import make_engine
from readmodel.tables import CHECKPOINTS, READ_MODEL
from schemas.commands import OperationKind
from schemas.envelope import Envelope, Payload
from schemas.events import (
    BackupCompleted,
    CredentialsRead,
    DatabaseCreated,
    OperationEvent,
    OperationRequested,
    OperationStarted,
    OperationStepCompleted,
    ProjectCreated,
)
from schemas.subjects import Subjects

EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
T0 = datetime(2026, 11, 1, tzinfo=UTC)
GIVE_UP_SECONDS = 900
CREATE_STEPS = ("role_created", "database_created", "public_revoked", "route_added", "login_verified")
BACKUP_STEPS = ("dump_uploaded", "checksum_verified", "object_sealed")


def lifecycles(count: int) -> Iterator[Envelope]:
    """``count`` events, in the order the platform emits them."""
    emitted = 0
    project_id = uuid.uuid4()
    database = 0
    while emitted < count:
        if database % 100 == 0:
            project_id = uuid.uuid4()
            yield _outside(ProjectCreated(name=f"p{database}", plan="pro"), project_id)
            emitted += 1
        database_id = uuid.uuid4()
        for envelope in [
            *_operation(project_id, database_id, OperationKind.CREATE, CREATE_STEPS, DatabaseCreated),
            _outside(CredentialsRead(database_id=database_id, credentials_version=1), project_id),
            *_operation(project_id, database_id, OperationKind.BACKUP, BACKUP_STEPS, None),
        ]:
            if emitted == count:
                return
            yield envelope
            emitted += 1
        database += 1


def _outside(payload: Payload, project_id: uuid.UUID) -> Envelope:
    return Envelope.wrap(payload, correlation_id=uuid.uuid4(), sequence=0, actor="admin", project_id=project_id)


def _operation(
    project_id: uuid.UUID,
    database_id: uuid.UUID,
    kind: OperationKind,
    steps: tuple[str, ...],
    done: type[OperationEvent] | None,
) -> list[Envelope]:
    operation_id, backup_id = uuid.uuid4(), uuid.uuid4() if kind is OperationKind.BACKUP else None
    common = {"kind": kind, "database_id": database_id}
    payloads: list[Payload] = [
        OperationRequested(
            **common,
            name=f"d{database_id.hex[:12]}",
            host_id="host-1",
            dbname=f"db_{database_id.hex}",
            role=f"u_{database_id.hex}",
            credentials_version=1,
            requested_at=T0,
            backup_id=backup_id,
        ),
        OperationStarted(**common),
        *(OperationStepCompleted(**common, step=step, outputs={"n": 1}) for step in steps),
    ]
    if done is not None:
        payloads.append(done(**common))
    else:
        payloads.append(
            BackupCompleted(
                **common,
                backup_id=backup_id,
                object_key=f"backups/{project_id}/{database_id}/{backup_id}",
                size_bytes=4096,
                dump_bytes=4000,
                sha256="0" * 64,
                key_id="k1",
                duration_ms=12,
            )
        )
    return [
        Envelope.wrap(
            payload,
            correlation_id=operation_id,
            sequence=0 if position == 0 else position + 1,  # 1 is the command itself
            actor="token:bench",
            project_id=project_id,
            occurred_at=T0 + timedelta(milliseconds=position),
        )
        for position, payload in enumerate(payloads)
    ]


async def publish(stack: Stack, count: int) -> int:
    """Publish ``count`` events; returns the stream sequence of the last one."""
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    last = 0
    pending: list[Any] = []
    for envelope in lifecycles(count):
        subject = subjects.event(envelope.type)
        body = envelope.model_dump_json().encode()
        pending.append(js.publish(subject, body, headers={"Nats-Msg-Id": envelope.msg_id}))
        if len(pending) == 500:
            last = max(ack.seq for ack in await asyncio.gather(*pending))
            pending = []
    if pending:
        last = max(ack.seq for ack in await asyncio.gather(*pending))
    await nc.close()
    return last


async def project(stack: Stack, last: int) -> float:
    """Seconds from starting the projector until its checkpoint is at ``last``."""
    engine = make_engine(stack.cluster.control_dsn(stack.meta_db), pool_size=1)
    stop = asyncio.Event()
    start = time.perf_counter()
    running = asyncio.create_task(run_projector(stack.settings("projector"), stop))
    try:
        while True:
            async with engine.connect() as conn:
                at = (
                    await conn.execute(sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == "live"))
                ).scalar_one_or_none()
            if at is not None and at >= last:
                return time.perf_counter() - start
            if running.done():
                running.result()
            if time.perf_counter() - start > GIVE_UP_SECONDS:
                raise RuntimeError(f"the projector did not catch up in {GIVE_UP_SECONDS} s (at {at} of {last})")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
        await engine.dispose()


async def raw_copy(stack: Stack) -> tuple[float, int]:
    """Seconds to COPY the read model's rows into empty copies of its tables; and the row count."""
    dsn = stack.cluster.control_dsn(stack.meta_db)
    tables = [t.name for t in READ_MODEL]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA raw_copy")
        data: dict[str, bytes] = {}
        for table in tables:
            await conn.execute(f'CREATE TABLE raw_copy."{table}" (LIKE public."{table}" INCLUDING ALL)')
            buffer = bytearray()
            async with conn.cursor().copy(f'COPY public."{table}" TO STDOUT (FORMAT binary)') as copy:
                async for chunk in copy:
                    buffer += chunk
            data[table] = bytes(buffer)
        rows = 0
        for table in tables:
            rows += (await (await conn.execute(f'SELECT count(*) FROM public."{table}"')).fetchone() or (0,))[0]
        start = time.perf_counter()
        async with conn.transaction():
            for table in tables:
                async with conn.cursor().copy(f'COPY raw_copy."{table}" FROM STDIN (FORMAT binary)') as copy:
                    await copy.write(data[table])
        elapsed = time.perf_counter() - start
        await conn.execute("DROP SCHEMA raw_copy CASCADE")
    return elapsed, rows


async def main() -> None:
    root = scratch_root("pgplane-bench-")
    cluster = Cluster(root, wal_archive=False)
    cluster.start()
    stack = Stack(cluster, root / "stack", namespace="benchproj", meta_db="bench_proj_meta", processes=())
    try:
        stack.start_servers()
        last = await publish(stack, EVENTS)
        ours = await project(stack, last)
        raw, rows = await raw_copy(stack)
        start = time.perf_counter()
        report = await replay(stack.settings("operator"))
        replayed = time.perf_counter() - start
    finally:
        stack.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "projector",
                "events": EVENTS,
                "rows": rows,
                "ours": {"seconds": round(ours, 2), "events_per_second": round(EVENTS / ours)},
                "raw": {"seconds": round(raw, 2), "events_per_second": round(EVENTS / raw)},
                "replay": {
                    "seconds": round(replayed, 2),
                    "events_per_second": round(EVENTS / replayed),
                    "matches": report.matches,
                },
                "ratio_projector": round(ours / raw, 2),
                "ratio_replay": round(replayed / raw, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    uvloop.run(main())
