"""A backup scheduler pass reads every policy's work signs in one statement and opens a
transaction only for the policies with something due: a slot to claim, a slot to report missed,
a backup past retention. Policies with nothing due cost nothing, however many there are."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.metadata.engine import make_engine
from infra.metadata.tables import OUTBOX, SLOTS
from infra.settings import Settings
from infra.signing import CommandSigner, new_signing_key
from producers.commands import Outbox
from producers.scheduler import BackupScheduler
from readmodel.tables import BACKUPS, DATABASES, OPERATIONS, POLICIES, PROJECTS, BackupStatus
from schemas.commands import backup_object_key
from schemas.subjects import Subjects

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
async def engine(metadata_dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(metadata_dsn, pool_size=1)
    async with engine.begin() as conn:
        for table in (OUTBOX, SLOTS, OPERATIONS, BACKUPS, POLICIES, DATABASES, PROJECTS):
            await conn.execute(sa.delete(table))
    yield engine
    await engine.dispose()


def scheduler(engine: AsyncEngine) -> BackupScheduler:
    settings = Settings.model_validate({"backup_missed_after_seconds": 600})
    outbox = Outbox(Subjects(namespace="passes"), CommandSigner(new_signing_key("k1")[0]))
    return BackupScheduler(engine, settings, outbox)


async def policy(
    engine: AsyncEngine,
    *,
    set_at: datetime,
    schedule: str | None = "daily",
    retain_days: int = 30,
    keep_last: int = 7,
    completed: tuple[datetime, ...] = (),
) -> uuid.UUID:
    """A live database with a backup policy set at ``set_at``, and completed backups made at ``completed``."""
    project_id, database_id = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(sa.insert(PROJECTS).values(id=project_id, name="p", plan="pro", created_at=NOW))
        await conn.execute(
            sa.insert(DATABASES).values(
                id=database_id,
                project_id=project_id,
                name="app",
                host_id="host-1",
                dbname=f"db_{database_id.hex}",
                role=f"u_{database_id.hex}",
                status="available",
                credentials_version=1,
                last_operation_id=uuid.uuid4(),
                created_at=NOW - timedelta(days=30),
                updated_at=NOW - timedelta(days=30),
            )
        )
        await conn.execute(
            sa.insert(POLICIES).values(
                database_id=database_id,
                project_id=project_id,
                schedule=schedule,
                retain_days=retain_days,
                keep_last=keep_last,
                updated_at=set_at,
            )
        )
        for made in completed:
            await backup(conn, database_id, project_id, status=BackupStatus.COMPLETED, made=made)
    return database_id


async def backup(conn: Any, database_id: uuid.UUID, project_id: uuid.UUID, *, status: str, made: datetime) -> uuid.UUID:
    operation_id, backup_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        sa.insert(BACKUPS).values(
            id=backup_id,
            project_id=project_id,
            database_id=database_id,
            status=status,
            trigger="schedule",
            object_key=backup_object_key(project_id, database_id, backup_id),
            operation_id=operation_id,
            created_at=made,
            updated_at=made,
        )
    )
    return operation_id


async def rows(engine: AsyncEngine, query: sa.Select[Any]) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def test_a_pass_costs_the_same_statements_for_two_idle_policies_or_twenty(engine: AsyncEngine) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    spent = []
    for policies in (2, 20):
        for _ in range(policies // 2):  # set an hour ago, daily: no slot since; a backup two days old, kept
            await policy(engine, set_at=NOW - timedelta(hours=1), completed=(NOW - timedelta(days=2),))
            await policy(engine, set_at=NOW - timedelta(hours=1), schedule=None, retain_days=1, keep_last=1)
        sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
        await scheduler(engine).tick(NOW)
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
        spent.append(len(statements))
        statements.clear()
    assert spent[0] == spent[1], spent
    assert await rows(engine, sa.select(SLOTS)) == [] and await rows(engine, sa.select(OUTBOX)) == []


async def test_each_kind_of_due_work_is_found_and_done(engine: AsyncEngine) -> None:
    idle = await policy(engine, set_at=NOW - timedelta(hours=1))
    due = await policy(engine, set_at=NOW - timedelta(minutes=30), schedule="0 * * * *")  # its 12:00 slot is unclaimed
    expired = await policy(
        engine,
        set_at=NOW - timedelta(hours=1),
        retain_days=1,
        keep_last=1,
        completed=(NOW - timedelta(days=3), NOW - timedelta(days=2)),
    )
    late = await policy(engine, set_at=NOW - timedelta(hours=1))
    async with engine.begin() as conn:  # its slot two hours ago ran a backup that failed: report it missed
        project_id = (await conn.execute(sa.select(DATABASES.c.project_id).where(DATABASES.c.id == late))).scalar_one()
        slot = NOW - timedelta(hours=2)
        failed = await backup(conn, late, project_id, status=BackupStatus.FAILED, made=slot)
        await conn.execute(sa.insert(SLOTS).values(database_id=late, slot=slot, operation_id=failed))

    await scheduler(engine).tick(NOW)

    slots = {row.database_id: row for row in await rows(engine, sa.select(SLOTS))}
    assert set(slots) == {due, late}
    assert slots[due].slot == NOW and slots[due].operation_id is not None and slots[due].missed_at is None
    assert slots[late].missed_at == NOW
    statuses = await rows(engine, sa.select(BACKUPS.c.database_id, BACKUPS.c.status, BACKUPS.c.created_at))
    assert sorted((row.database_id == expired, row.status) for row in statuses if row.database_id != late) == [
        (False, "pending"),  # the due slot's backup, requested
        (True, "completed"),  # the newest is kept
        (True, "deleting"),  # the older one is past retention
    ]
    subjects = [row.subject for row in await rows(engine, sa.select(OUTBOX.c.subject))]
    assert sum(subject.endswith(".backup") for subject in subjects) == 1
    assert sum(subject.endswith(".delete_backup") for subject in subjects) == 1
    assert subjects.count("passes.evt.backup.missed") == 1
    assert idle not in slots


async def test_settled_slots_are_forgotten_after_a_week_but_each_database_keeps_its_newest(engine: AsyncEngine) -> None:
    kept_alone, pruned = (
        await policy(engine, set_at=NOW, schedule=None),
        await policy(engine, set_at=NOW, schedule=None),
    )
    async with engine.begin() as conn:
        ids = (await conn.execute(sa.select(DATABASES.c.id, DATABASES.c.project_id))).all()
        projects = {row.id: row.project_id for row in ids}

        async def slot(database_id: uuid.UUID, days_ago: int, *, status: str | None, missed: bool = False) -> None:
            at = NOW - timedelta(days=days_ago)
            made = await backup(conn, database_id, projects[database_id], status=status, made=at) if status else None
            values = {"database_id": database_id, "slot": at, "operation_id": made, "missed_at": at if missed else None}
            await conn.execute(sa.insert(SLOTS).values(**values))

        await slot(kept_alone, 30, status=BackupStatus.COMPLETED)  # settled and old, but its database's newest
        await slot(pruned, 10, status=BackupStatus.COMPLETED)
        await slot(pruned, 9, status=None, missed=True)
        await slot(pruned, 8, status=BackupStatus.FAILED)  # not reported yet: kept for the report
        await slot(pruned, 2, status=BackupStatus.COMPLETED)  # settled less than a week ago

    await scheduler(engine).tick(NOW)

    left = {(row.database_id, (NOW - row.slot).days) for row in await rows(engine, sa.select(SLOTS))}
    assert left == {(kept_alone, 30), (pruned, 8), (pruned, 2)}
