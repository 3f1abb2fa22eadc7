"""The projector applies events in batches of many statements; applying the same events one by
one must leave exactly the same read model. Random but reproducible histories — every kind of
operation, failures and compensations, a name freed and taken again, duplicates and re-emitted
old events — applied one event at a time, in batches of random sizes, and in one batch, into
three fresh schemas, then compared table by table."""

from __future__ import annotations

import gc
import random
import uuid
from collections.abc import Generator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.projector.replay import table_hashes
from consumers.projector.service import BATCH, YOUNG_OBJECTS, project_batch, read
from infra.collector import holding_batches
from readmodel.projection import apply, apply_events
from readmodel.tables import create_tables
from schemas.commands import OperationKind
from schemas.envelope import Envelope
from schemas.events import (
    BackupCompleted,
    BackupDeleted,
    BackupDownloaded,
    BackupPolicySet,
    BackupVerified,
    BaseBackupCompleted,
    BaseBackupDeleted,
    CredentialsRead,
    CredentialsRotated,
    DatabaseCreated,
    DatabaseDeleted,
    DatabaseReset,
    DatabaseRestored,
    OperationCompensated,
    OperationFailed,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    ProjectCreated,
    ProjectDeleted,
    WalSegmentArchived,
)
from tests.integration.test_projection import T0, Operation, conn, outside_operation

__all__ = ["conn"]  # the fixture, shared with the per-event tests


def history(rng: random.Random) -> list[Envelope]:
    """One project's events: a few databases' lives interleaved, with duplicates thrown in."""
    project = outside_operation(ProjectCreated(name="acme", plan="pro"))
    project_id = project.project_id
    freed = [*_database_life(rng, project_id, "app", deleted=True)]
    lives = [
        [*freed, *_database_life(rng, project_id, "app")],  # the name again, once free
        [*_database_life(rng, project_id, "web")],
        [*_database_life(rng, project_id, "jobs")],
    ]
    events = [project, *_host_events(rng)]
    while any(lives):
        life = rng.choice([life for life in lives if life])
        events.append(life.pop(0))
        if rng.random() < 0.1:
            events.append(rng.choice(events))  # a redelivery, or an old event emitted again
    events += rng.sample(events, 8)  # an outbox re-publishing what it sent before
    events.append(outside_operation(ProjectDeleted(name="acme"), project_id))
    return events


def _database_life(
    rng: random.Random, project_id: uuid.UUID, name: str, *, deleted: bool = False
) -> Iterator[Envelope]:
    create = _operation(OperationKind.CREATE, project_id)
    database_id = create.database_id
    yield create.requested(name=name)
    if not (yield from _run(rng, create, DatabaseCreated)):
        return
    backups: list[uuid.UUID] = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(
            [
                OperationKind.BACKUP,
                OperationKind.ROTATE_CREDENTIALS,
                OperationKind.RESET,
                OperationKind.RESTORE,
                OperationKind.VERIFY_BACKUP,
                OperationKind.DELETE_BACKUP,
            ]
        )
        operation = _operation(kind, project_id, database_id)
        if kind is OperationKind.BACKUP:
            backup_id = uuid.uuid4()
            backups.append(backup_id)
            yield operation.requested(name=name, backup_id=backup_id, object_key=f"k/{backup_id}")
            fields = {"object_key": f"k/{backup_id}", "size_bytes": 10, "dump_bytes": 9, "sha256": "a" * 64}
            ending = {"backup_id": backup_id, **fields, "key_id": "k1", "duration_ms": 5}
            yield from _run(rng, operation, BackupCompleted, **ending)
        elif kind is OperationKind.ROTATE_CREDENTIALS:
            yield operation.requested(name=name)
            yield from _run(rng, operation, CredentialsRotated, credentials_version=rng.randint(2, 9))
        elif kind in (OperationKind.VERIFY_BACKUP, OperationKind.DELETE_BACKUP) and backups:
            backup_id = rng.choice(backups)
            yield operation.requested(name=name, backup_id=backup_id)
            if kind is OperationKind.VERIFY_BACKUP:
                yield from _run(rng, operation, BackupVerified, backup_id=backup_id, duration_ms=3, tables=2)
            else:
                yield from _run(rng, operation, BackupDeleted, backup_id=backup_id, reason="asked")
        elif kind in (OperationKind.RESET, OperationKind.RESTORE):
            yield operation.requested(name=name)
            yield from _run(rng, operation, DatabaseReset if kind is OperationKind.RESET else DatabaseRestored)
        outside = rng.choice(
            [
                CredentialsRead(database_id=database_id, credentials_version=1),
                BackupPolicySet(database_id=database_id, schedule="daily", retain_days=rng.randint(1, 9), keep_last=2),
                BackupDownloaded(database_id=database_id, backup_id=uuid.uuid4()),
            ]
        )
        yield outside_operation(outside, project_id)
    if deleted or rng.random() < 0.5:
        delete = _operation(OperationKind.DELETE, project_id, database_id)
        yield delete.requested(name=name)
        while not (yield from _run(rng, delete, DatabaseDeleted)):
            delete = _operation(OperationKind.DELETE, project_id, database_id)
            yield delete.requested(name=name)


def _operation(kind: OperationKind, project_id: uuid.UUID, database_id: uuid.UUID | None = None) -> Operation:
    operation = Operation(kind, database_id=database_id)
    operation.project_id = project_id
    return operation


def _run(rng: random.Random, operation: Operation, success: type, **fields: object) -> Generator[Envelope, None, bool]:
    """An operation after its request: it succeeds, fails, or fails and is compensated."""
    yield operation.next(OperationStarted)
    yield operation.next(OperationStepCompleted, step="first", outputs={})
    ending = rng.random()
    if ending < 0.7:
        yield operation.next(OperationStepCompleted, step="second", outputs={})
        yield operation.next(success, **fields)
        return True
    if ending < 0.85:
        yield operation.next(OperationFailed, reason="boom", detail="it broke")
        return False
    yield operation.next(OperationStepFailed, step="second", reason="boom", detail="it broke")
    yield operation.next(OperationStepCompensated, step="first")
    yield operation.next(OperationCompensated, reason="boom", failed_step="second")
    return False


def _host_events(rng: random.Random) -> list[Envelope]:
    segments = [f"{n:024X}" for n in range(1, 6)]
    base = uuid.uuid4()
    events = [
        outside_operation(WalSegmentArchived(host_id="host-1", segment=s, archived_at=T0, size_bytes=16))
        for s in segments
    ]
    events.append(
        outside_operation(
            BaseBackupCompleted(
                host_id="host-1",
                base_backup_id=base,
                start_segment=segments[0],
                stop_segment=segments[1],
                started_at=T0,
                finished_at=T0,
                size_bytes=100,
            )
        )
    )
    events.append(
        outside_operation(BaseBackupDeleted(host_id="host-1", base_backup_id=base, wal_kept_from=segments[2]))
    )
    events.insert(rng.randrange(len(events)), events[rng.randrange(len(events))])
    return events


@pytest.mark.parametrize("seed", range(8))
async def test_batches_leave_what_single_events_leave(conn: AsyncConnection, seed: int) -> None:
    rng = random.Random(seed)
    events = history(rng)
    suffix = uuid.uuid4().hex[:8]
    schemas = {mode: f"{mode}_{suffix}" for mode in ("single", "batches", "whole")}
    for schema in schemas.values():
        await create_tables(conn, schema)

    await conn.execution_options(schema_translate_map={None: schemas["single"]})
    for event in events:
        await apply(conn, event)
    await conn.execution_options(schema_translate_map={None: schemas["batches"]})
    position = 0
    while position < len(events):
        size = rng.randint(1, 12)
        await apply_events(conn, events[position : position + size])
        position += size
    await conn.execution_options(schema_translate_map={None: schemas["whole"]})
    await apply_events(conn, events)
    await conn.execution_options(schema_translate_map={})

    single = await table_hashes(conn, schemas["single"])
    assert await table_hashes(conn, schemas["batches"]) == single
    assert await table_hashes(conn, schemas["whole"]) == single
    empty = await table_hashes(conn, "public")  # the fixture's tables stay untouched
    assert single != empty


async def test_a_batch_and_the_next_are_held_without_a_collection(conn: AsyncConnection) -> None:
    """What the projector holds at its peak (a batch being applied, the next one parsed) stays
    under the collector's young threshold it runs with: no collection scans a batch in use, and
    none promotes it to the oldest generation (whose full collections would scan every object)."""
    rng = random.Random(7)
    events: list[Envelope] = []
    while len(events) < 2 * BATCH:
        events += history(rng)
    bodies = [(sequence, event.model_dump_json().encode()) for sequence, event in enumerate(events[: 2 * BATCH], 1)]
    collections: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    with holding_batches(YOUNG_OBJECTS):  # its exit may collect what the batches left: not counted
        gc.callbacks.append(counted)
        try:
            applied, parsed_next = read(bodies[:BATCH]), read(bodies[BATCH:])
            projected = await project_batch(conn, applied)
        finally:
            gc.callbacks.remove(counted)
    assert collections == []
    assert len(projected.events) == BATCH and len(parsed_next) == BATCH
