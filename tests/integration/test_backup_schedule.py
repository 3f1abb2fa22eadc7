"""Backup policies: one backup per slot with two scheduler replicas running, ``backup.missed``
when a slot passes without a backup, and retention that deletes expired backups."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devstack.stack import PROCESSES, Stack
from entrypoints import control_plane
from infra.metadata.engine import make_engine
from infra.processes import spawn, stop
from producers.backup_schedule import check_schedule, slots_between
from producers.scheduler import BackupScheduler
from tests.backup_helpers import backup, ready_database, stack_store
from tests.platform_client import PlatformClient, Tenant
from tests.replay import replay_matches

EVERY_2S = "* * * * * */2"


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {
        "PGPLANE_BACKUP_MIN_INTERVAL_SECONDS_FREE": "1",
        "PGPLANE_SCHEDULER_INTERVAL_SECONDS": "0.3",
        "PGPLANE_BACKUP_MISSED_AFTER_SECONDS": "3",
    }


@pytest.fixture
def stack_processes() -> tuple[str, ...]:
    return PROCESSES


def meta(stack: Stack, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        return conn.execute(query, params).fetchall()


async def set_policy(client: PlatformClient, tenant: Tenant, database_id: str, **policy: object) -> None:
    response = await client.http.put(f"/databases/{database_id}/backup-policy", json=policy, headers=tenant.headers)
    assert response.status_code == 200, response.text


async def settled(client: PlatformClient, tenant: Tenant, database_id: str) -> list[dict[str, object]]:
    """The database's backups once none is pending or running any more."""
    deadline = time.monotonic() + 60
    while True:
        listed = (await client.http.get(f"/databases/{database_id}/backups", headers=tenant.headers)).json()["data"]
        if all(b["status"] not in ("pending", "running", "deleting") for b in listed):
            return list(listed)
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.2)


async def test_two_scheduler_replicas_take_one_backup_per_slot(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "scheduled")
    second = spawn(
        [sys.executable, "-m", "entrypoints.cli", "scheduler"],
        stack.log_path("scheduler-2"),
        env=stack.env("scheduler"),
    )
    try:
        await set_policy(client, tenant, database_id, schedule=EVERY_2S, retain_days=7, keep_last=7)
        await asyncio.sleep(9)
        await set_policy(client, tenant, database_id, schedule=None, retain_days=7, keep_last=7)
        assert second.poll() is None and stack.procs["scheduler"].poll() is None  # both replicas ran throughout
    finally:
        stop(second)
    backups = await settled(client, tenant, database_id)
    slots = meta(stack, "SELECT slot FROM backup_slots WHERE operation_id IS NOT NULL ORDER BY slot")
    assert len(slots) >= 3
    assert len(backups) == len(slots) and all(b["status"] == "completed" for b in backups)
    assert {b["trigger"] for b in backups} == {"schedule"}
    commands = meta(stack, "SELECT count(*), count(DISTINCT msg_id) FROM outbox WHERE subject LIKE %s", "%.backup")
    assert commands == [(len(slots), len(slots))]  # one command per slot, not one per replica
    claimed = [row[0] for row in meta(stack, "SELECT slot FROM backup_slots ORDER BY slot")]
    assert claimed == [row[0] for row in slots]  # no slot skipped
    assert {later - earlier for earlier, later in itertools.pairwise(claimed)} == {timedelta(seconds=2)}  # type: ignore[operator]

    stack.stop_process("agent")  # now slots pass with nothing to run their backups
    await set_policy(client, tenant, database_id, schedule=EVERY_2S, retain_days=7, keep_last=7)
    deadline = time.monotonic() + 30
    while not (missed := [e for e in await audit(client, tenant) if e["action"] == "backup.missed"]):
        assert time.monotonic() < deadline, "no backup.missed reported"
        await asyncio.sleep(0.3)
    assert missed[0]["outcome"] == "missed" and missed[0]["resource_id"] == database_id
    assert "pending" in str(missed[0]["detail"])
    await set_policy(client, tenant, database_id, schedule=None, retain_days=7, keep_last=7)
    stack.start_process("agent")
    await settled(client, tenant, database_id)
    replay_matches(stack)


async def audit(client: PlatformClient, tenant: Tenant) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = (await client.http.get("/audit-log", headers=tenant.headers)).json()["data"]
    return entries


async def test_retention_deletes_expired_backups_but_keeps_the_newest(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "retained")
    taken = [await backup(client, tenant, database_id) for _ in range(3)]
    await set_policy(client, tenant, database_id, schedule=None, retain_days=1, keep_last=1)

    settings = stack.settings("scheduler")
    engine = make_engine(settings.metadata_dsn, pool_size=1)
    scheduler = BackupScheduler(engine, settings, control_plane.outbox(settings))
    await scheduler.tick(datetime.now(UTC) + timedelta(hours=23))  # nothing has expired yet
    assert [b["status"] for b in await settled(client, tenant, database_id)] == ["completed"] * 3
    await scheduler.tick(datetime.now(UTC) + timedelta(days=2))  # the API's outbox relay publishes the deletions
    await scheduler.tick(datetime.now(UTC) + timedelta(days=2))  # a second pass asks for nothing new
    await engine.dispose()

    remaining = await settled(client, tenant, database_id)
    assert [b["id"] for b in remaining] == [taken[-1]["id"]]
    store = stack_store(stack)
    assert await store.keys(f"backups/{tenant.project_id}/") == [
        f"backups/{tenant.project_id}/{database_id}/{taken[-1]['id']}.pgdump.enc"
    ]
    await store.close()
    deletions = [e for e in await audit(client, tenant) if e["action"] == "backup.delete"]
    assert {e["outcome"] for e in deletions} == {"requested", "succeeded"} and len(deletions) == 4
    gone = await client.http.get(f"/backups/{taken[0]['id']}", headers=tenant.headers)
    assert gone.status_code == 404
    replay_matches(stack)


def test_schedules_are_checked_and_enumerated() -> None:
    check_schedule("daily", min_interval_seconds=3600)
    with pytest.raises(ValueError, match="more often"):
        check_schedule("*/5 * * * *", min_interval_seconds=3600)
    with pytest.raises(ValueError, match="valid cron"):
        check_schedule("every day", min_interval_seconds=3600)
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert slots_between("daily", start, start + timedelta(days=2, hours=1)) == [
        start + timedelta(days=1),
        start + timedelta(days=2),
    ]
    assert slots_between("daily", start, start) == []
