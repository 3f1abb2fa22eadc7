"""A projector batch in few round trips: the checkpoint locked and moved up in one statement, and
a batch's writes to different tables in one statement. A batch of one event is the normal case
(events come as the agent makes them), so what it costs is paid several times per operation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.projector.service import advance_checkpoint, project_batch
from infra.metadata.engine import make_engine
from readmodel.projection import apply
from readmodel.tables import CHECKPOINTS, OPERATIONS, STEPS
from schemas.commands import OperationKind
from schemas.events import OperationStarted, OperationStepCompleted
from tests.integration.test_projection import Operation, conn, one

__all__ = ["conn"]


@pytest.fixture
async def engine(metadata_dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(metadata_dsn, pool_size=3)
    yield engine
    await engine.dispose()


async def checkpoint(conn: AsyncConnection, name: str) -> int:
    return int((await one(conn, CHECKPOINTS, CHECKPOINTS.c.name == name)).last_sequence)


async def test_the_checkpoint_is_made_then_moved_up_never_down(conn: AsyncConnection) -> None:
    name = f"test-{uuid.uuid4().hex}"
    assert await advance_checkpoint(conn, name, 5) == 0  # made at 0, and moved
    assert await advance_checkpoint(conn, name, 9) == 5
    assert await advance_checkpoint(conn, name, 3) == 9  # a redelivered batch below it
    assert await checkpoint(conn, name) == 9


async def test_a_second_projector_waits_for_the_first_and_reads_where_it_left_the_checkpoint(
    engine: AsyncEngine,
) -> None:
    name = f"test-{uuid.uuid4().hex}"
    async with engine.begin() as setup:
        await advance_checkpoint(setup, name, 1)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            assert await advance_checkpoint(first, name, 10) == 1
            await second.begin()
            pid = (await second.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            waiting = asyncio.create_task(advance_checkpoint(second, name, 7))
            await _until_waiting_on_a_lock(engine, pid)
            await first.commit()
            assert await waiting == 10  # not 1: it skips what the first applied
            await second.commit()
        async with engine.connect() as after:
            assert await checkpoint(after, name) == 10
    finally:
        async with engine.begin() as cleanup:
            await cleanup.execute(sa.delete(CHECKPOINTS).where(CHECKPOINTS.c.name == name))


async def _until_waiting_on_a_lock(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as watcher:
        for _ in range(500):
            waits = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"
            if (await watcher.exec_driver_sql(waits, (pid,))).scalar_one_or_none() == "Lock":
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited on the checkpoint's lock")


async def test_a_batch_of_one_step_is_three_statements(conn: AsyncConnection) -> None:
    operation = Operation(OperationKind.CREATE)
    await apply(conn, operation.requested())
    await apply(conn, operation.next(OperationStarted))
    name = f"test-{uuid.uuid4().hex}"
    await advance_checkpoint(conn, name, 1)
    statements: list[str] = []

    def sent(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(conn.sync_engine, "before_cursor_execute", sent)
    try:
        step = operation.next(OperationStepCompleted, step="role_created", outputs={})
        projected = await project_batch(conn, [(2, step)], checkpoint_name=name)
    finally:
        sa.event.remove(conn.sync_engine, "before_cursor_execute", sent)

    assert projected.checkpoint == 2
    assert len(statements) == 3, statements  # the checkpoint, the operation's state, the writes
    assert '"operations"' in statements[2] and '"operation_steps"' in statements[2]
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == operation.id)).last_sequence == step.sequence
    assert (await one(conn, STEPS, STEPS.c.operation_id == operation.id)).status == "completed"
    assert await checkpoint(conn, name) == 2
