"""Waking a request that waits for an operation: the projector's commit notifies the operations
that ended, the API's listener wakes their watchers, and both survive a lost connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.cluster import Cluster
from infra.metadata.engine import make_engine
from infra.metadata.notifications import Waiters
from readmodel.projection import apply_events
from readmodel.tables import OPERATION_ENDED_CHANNEL
from schemas.commands import OperationKind
from schemas.envelope import Envelope
from schemas.events import DatabaseCreated, OperationRequested, OperationStarted, OperationStepCompleted

WOKEN = 10.0
"""How long a test waits for a wakeup that must come (a generous bound, not a measurement)."""


@pytest.fixture
async def engine(metadata_dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(metadata_dsn, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def waiters(engine: AsyncEngine) -> AsyncIterator[Waiters]:
    waiters, stop = Waiters(), asyncio.Event()
    listening = asyncio.create_task(waiters.listen(engine, OPERATION_ENDED_CHANNEL, stop))
    await listener_up(engine)
    yield waiters
    stop.set()
    await listening


async def listener_up(engine: AsyncEngine) -> None:
    async with asyncio.timeout(WOKEN):
        while not await listeners(engine):
            await asyncio.sleep(0.02)


async def listeners(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        rows = await raw.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    return [row["pid"] for row in rows]


def create_events() -> list[Envelope]:
    operation, project, database = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    kind = OperationKind.CREATE
    payloads = [
        OperationRequested(
            kind=kind,
            database_id=database,
            host_id="host-1",
            dbname=f"db_{database.hex}",
            role=f"u_{database.hex}",
            credentials_version=1,
            requested_at=datetime.now(UTC),
            name="app",
        ),
        OperationStarted(kind=kind, database_id=database),
        OperationStepCompleted(kind=kind, database_id=database, step="role_created"),
        DatabaseCreated(kind=kind, database_id=database),
    ]
    return [
        Envelope.wrap(payload, correlation_id=operation, sequence=0 if i == 0 else i + 1, actor="t", project_id=project)
        for i, payload in enumerate(payloads)
    ]


async def project(engine: AsyncEngine, events: list[Envelope]) -> None:
    async with engine.begin() as conn:
        await apply_events(conn, events)


async def test_an_operation_wakes_its_watcher_when_the_batch_that_ends_it_commits(
    engine: AsyncEngine, waiters: Waiters
) -> None:
    events = create_events()
    operation = str(events[0].correlation_id)
    with waiters.watch(operation) as ended, waiters.watch(str(uuid.uuid4())) as other:
        await project(engine, events[:3])  # requested, started, a step: still running
        assert not await ended.wait(0.3)

        async with engine.begin() as conn:
            await apply_events(conn, events[3:])
            assert not await ended.wait(0.3)  # not before the commit
        assert await ended.wait(WOKEN)
        assert not await other.wait(0.1)


async def test_a_lost_listening_connection_is_opened_again(engine: AsyncEngine, waiters: Waiters) -> None:
    (pid,) = await listeners(engine)
    with waiters.watch(str(uuid.uuid4())) as watching:
        assert not await watching.wait(0.1)
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.execute(f"SELECT pg_terminate_backend({pid})")
        async with asyncio.timeout(WOKEN):
            while (await listeners(engine)) in ([], [pid]):
                await asyncio.sleep(0.05)
        # what was notified while nobody listened is lost: every watcher is told to look again
        assert await watching.wait(WOKEN)

    events = create_events()
    with waiters.watch(str(events[0].correlation_id)) as ended:
        await project(engine, events)
        assert await ended.wait(WOKEN)


async def test_the_pool_replaces_connections_the_server_closed(metadata_dsn: str, cluster: Cluster) -> None:
    engine = make_engine(metadata_dsn, pool_size=2)
    try:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            pid = raw.get_server_pid()
        with psycopg.connect(cluster.superuser_dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        async with asyncio.timeout(WOKEN):
            while not raw.is_closed():  # the client sees the server's goodbye
                await asyncio.sleep(0.02)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1
    finally:
        await engine.dispose()
