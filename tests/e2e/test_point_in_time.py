"""Point-in-time restore on a data host that archives its WAL: the sentinel test (each noted
moment comes back exactly, in place and into new databases, next to another tenant whose data
must not move), a missing WAL segment, a killed agent, a cancel, a deadline, and preflight."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack.cluster import Cluster
from devstack.faults import CRASH_EXIT_CODE, InjectedFaults
from devstack.stack import Stack
from devstack.state import scratch_root
from infra.wal import wal_object_key
from tests.backup_helpers import connect, host_databases, ready_database, rows, stack_store
from tests.platform_client import PlatformClient, Tenant
from tests.replay import replay_matches
from tests.stacks import new_stack


@pytest.fixture(scope="session")
def archiving_cluster() -> Iterator[Cluster]:
    """A data host that archives WAL (the shared cluster does not: most tests need no PITR)."""
    root = scratch_root("pgplane-pitr-")
    servers = Cluster(root, wal_archive=True)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pitr_stack(archiving_cluster: Cluster) -> Iterator[Stack]:
    """One platform for the module (its first base backup is the slow part); tenants keep tests apart."""
    platform = new_stack(archiving_cluster)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
async def pitr(pitr_stack: Stack) -> AsyncIterator[PlatformClient]:
    async with httpx.AsyncClient(base_url=f"{pitr_stack.api_url}/api/v1", timeout=30) as http:
        yield PlatformClient(http, pitr_stack)


def db_now(uri: str) -> datetime:
    with connect(uri) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


async def window(client: PlatformClient, tenant: Tenant, database_id: str) -> dict[str, Any]:
    response = await client.http.get(f"/databases/{database_id}/restore-window", headers=tenant.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def archived_past(client: PlatformClient, tenant: Tenant, database_id: str, moment: datetime) -> None:
    """Switch WAL on the host until the restore window reaches ``moment``."""
    deadline = time.monotonic() + 60
    while True:
        with psycopg.connect(client.stack.cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute("SELECT txid_current()")
            conn.execute("SELECT pg_switch_wal()")
        latest = (await window(client, tenant, database_id))["latest"]
        if latest and datetime.fromisoformat(latest) >= moment:
            return
        assert time.monotonic() < deadline, f"the restore window never reached {moment}"
        await asyncio.sleep(0.5)


async def restore_to(
    client: PlatformClient, tenant: Tenant, database_id: str, moment: datetime, **target: str
) -> dict[str, Any]:
    body = {"point_in_time": moment.isoformat(), "target": "in_place"} | target
    response = await client.http.post(f"/databases/{database_id}/restore", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    operation = await client.wait(tenant, response.json()["operation"]["id"], timeout=180)
    operation["database"] = response.json()["database"]
    return operation


async def sentinel_history(
    client: PlatformClient, tenant: Tenant, database_id: str, uri: str
) -> list[tuple[datetime, str]]:
    """Once the restore window is open: write a value, note the time, change it, note the time,
    change it again."""
    await archived_past(client, tenant, database_id, db_now(uri))  # the window covers the new database
    with connect(uri) as conn:
        conn.execute("CREATE TABLE sentinel (id int PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO sentinel VALUES (1, 'first')")
    noted = []
    for value in ("second", "third"):
        await asyncio.sleep(0.5)
        noted.append((db_now(uri), rows(uri, "sentinel")[0][1]))
        await asyncio.sleep(0.5)
        with connect(uri) as conn:
            conn.execute("UPDATE sentinel SET value = %s", (value,))
    return noted


def recovered(stack: Stack, operation_id: str, output: str) -> int:
    """An output of the restore's recovery step, from the agent's ledger."""
    with psycopg.connect(stack.cluster.superuser_dsn(stack.ledger_db)) as conn:
        row = conn.execute(
            "SELECT (envelope->'data'->'outputs'->>%s)::int FROM ledger_events"
            " WHERE operation_id = %s AND envelope->'data'->>'step' = 'point_in_time_recovered'",
            (output, operation_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def left_out(stack: Stack, operation_id: str) -> int:
    """How many other databases' files the restore's recovery did not unpack."""
    return recovered(stack, operation_id, "databases_left_out")


def wal_read(stack: Stack, operation_id: str, moment: datetime) -> tuple[int, int]:
    """The WAL segments a restore fetched, and how many were archived from its base backup on."""
    fetched = recovered(stack, operation_id, "wal_segments_fetched")
    with psycopg.connect(stack.cluster.superuser_dsn(stack.ledger_db)) as conn:
        archived = conn.execute(
            "SELECT count(*) FROM wal_archive WHERE segment >="
            " (SELECT max(start_segment) FROM base_backups WHERE finished_at <= %s)",
            (moment,),
        ).fetchone()
    assert archived is not None
    return fetched, int(archived[0])


def assert_clean(stack: Stack) -> None:
    assert host_databases(stack, "rs_") == [] and host_databases(stack, "ro_") == []
    assert list((stack.work_dir).glob("*")) == []  # no temporary cluster or download left


async def test_sentinel_values_come_back_for_each_moment(pitr: PlatformClient) -> None:
    client, stack = pitr, pitr.stack
    tenant, neighbour = await client.tenant("acme"), await client.tenant("neighbour")
    database_id, uri = await ready_database(client, tenant, "ledger")
    _, neighbour_uri = await ready_database(client, neighbour, "theirs")
    with connect(neighbour_uri) as conn:
        conn.execute("CREATE TABLE items AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 5000) g")
    noted = await sentinel_history(client, tenant, database_id, uri)
    await archived_past(client, tenant, database_id, noted[-1][0])
    with connect(neighbour_uri) as conn:  # ~9 segments of WAL past every noted moment: never fetched
        conn.execute("CREATE TABLE bulk AS SELECT g AS id, repeat('x', 200) AS body FROM generate_series(1, 600000) g")
    health = await window(client, tenant, database_id)
    assert health["last_archived_segment"] and health["base_backups"] >= 1 and health["archive_lag_seconds"] >= 0
    with connect(neighbour_uri) as conn:
        conn.execute("INSERT INTO items VALUES (0, 'written after the noted moments')")
    neighbour_rows = rows(neighbour_uri)

    for i, (moment, value) in enumerate(noted):
        copy = await restore_to(client, tenant, database_id, moment, target="new_database", name=f"at-{i}")
        assert copy["status"] == "succeeded", copy
        copy_uri = (await client.credentials(tenant, copy["database"]["id"]))["uri"]
        assert rows(copy_uri, "sentinel") == [(1, value)], moment

    in_place = await restore_to(client, tenant, database_id, noted[0][0])
    assert in_place["status"] == "succeeded", in_place
    assert [s["name"] for s in in_place["steps"]] == [
        "wal_sealed",
        "wal_checked",
        "point_in_time_recovered",
        "scratch_restored",
        "temporary_cluster_removed",
        "swapped_in",
        "original_dropped",
        "work_cleaned",
    ]
    assert rows(uri, "sentinel") == [(1, "first")]  # same credentials, the value of that moment
    fetched, archived = wal_read(stack, in_place["id"], noted[0][0])
    assert 0 < fetched <= archived - 5, (fetched, archived)  # on demand: not the WAL past the target
    assert rows(neighbour_uri) == neighbour_rows  # the other tenant on the host did not move
    assert_clean(stack)

    future = await client.http.post(
        f"/databases/{database_id}/restore",
        json={"point_in_time": (datetime.now(UTC) + timedelta(hours=1)).isoformat(), "target": "in_place"},
        headers=tenant.headers,
    )
    assert future.status_code == 422 and "future" in future.json()["error"]["message"]
    ancient = await client.http.post(
        f"/databases/{database_id}/restore",
        json={"point_in_time": "2020-01-01T00:00:00Z", "target": "in_place"},
        headers=tenant.headers,
    )
    assert ancient.status_code == 422 and "before the restore window" in ancient.json()["error"]["message"]
    naive = await client.http.post(
        f"/databases/{database_id}/restore",
        json={"point_in_time": "2026-01-01T00:00:00", "target": "in_place"},
        headers=tenant.headers,
    )
    assert naive.status_code == 422
    replay_matches(stack)


async def test_agent_killed_mid_restore_finishes_and_cleans_up(pitr: PlatformClient) -> None:
    client, stack = pitr, pitr.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "crashy")
    noted = await sentinel_history(client, tenant, database_id, uri)
    await archived_past(client, tenant, database_id, noted[-1][0])
    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(crash_at="pitr_restore.point_in_time_recovered.done"))
    body = {"point_in_time": noted[0][0].isoformat(), "target": "in_place"}
    accepted = await client.http.post(f"/databases/{database_id}/restore", json=body, headers=tenant.headers)
    assert accepted.status_code == 202, accepted.text
    assert stack.procs["agent"].wait(timeout=180) == CRASH_EXIT_CODE  # a temporary cluster is running now
    assert rows(uri, "sentinel") == [(1, "third")]
    stack.start_process("agent")
    await client.succeeded(tenant, accepted.json()["operation"]["id"])
    assert rows(uri, "sentinel") == [(1, "first")]
    assert_clean(stack)
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        conn.execute("SELECT 1")  # the host is fine
    assert not running_from(stack.work_dir)


def running_from(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (a leftover temporary PostgreSQL)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(directory).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


async def test_cancel_stops_a_running_restore(pitr: PlatformClient) -> None:
    client, stack = pitr, pitr.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "cancelled")
    noted = await sentinel_history(client, tenant, database_id, uri)
    await archived_past(client, tenant, database_id, noted[-1][0])
    body = {"point_in_time": noted[0][0].isoformat(), "target": "in_place"}
    accepted = await client.http.post(f"/databases/{database_id}/restore", json=body, headers=tenant.headers)
    assert accepted.status_code == 202, accepted.text
    operation_id = accepted.json()["operation"]["id"]
    deadline = time.monotonic() + 60
    while not any(s["name"] == "wal_sealed" for s in (await client.wait_steps(tenant, operation_id))):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    cancel = await client.http.post(f"/operations/{operation_id}/cancel", headers=tenant.headers)
    assert cancel.status_code == 202, cancel.text
    operation = await client.wait(tenant, operation_id, timeout=120)
    assert operation["status"] == "compensated" and "cancelled by" in operation["error"], operation
    assert {"name": "wal_sealed", "status": "compensated", "detail": None} in operation["steps"]  # undone
    assert rows(uri, "sentinel") == [(1, "third")]
    assert_clean(stack)
    again = await client.http.post(f"/operations/{operation_id}/cancel", headers=tenant.headers)
    assert again.status_code == 409


async def test_a_deleted_database_restores_up_to_its_deletion(pitr: PlatformClient) -> None:
    client = pitr
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "departed")
    noted = await sentinel_history(client, tenant, database_id, uri)
    delete = await client.http.delete(f"/databases/{database_id}", headers=tenant.headers)
    assert delete.status_code == 202, delete.text
    await client.succeeded(tenant, delete.json()["operation"]["id"])
    after = datetime.now(UTC)
    deadline = time.monotonic() + 60
    while True:  # archiving goes on past the deletion...
        with psycopg.connect(client.stack.cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute("SELECT txid_current()")
            conn.execute("SELECT pg_switch_wal()")
        found = await window(client, tenant, database_id)
        if found["last_archived_at"] and datetime.fromisoformat(found["last_archived_at"]) > after:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    assert datetime.fromisoformat(found["latest"]) <= after  # ...its restore window does not
    body = {"point_in_time": after.isoformat(), "target": "new_database", "name": "too-late"}
    late = await client.http.post(f"/databases/{database_id}/restore", json=body, headers=tenant.headers)
    assert late.status_code == 422, late.text
    assert "the database was deleted: its restore window ends at" in late.json()["error"]["message"]
    in_place = await client.http.post(
        f"/databases/{database_id}/restore",
        json={"point_in_time": noted[0][0].isoformat(), "target": "in_place"},
        headers=tenant.headers,
    )
    assert in_place.status_code == 404  # nothing to restore over
    copy = await restore_to(client, tenant, database_id, noted[-1][0], target="new_database", name="revived")
    assert copy["status"] == "succeeded", copy
    copy_uri = (await client.credentials(tenant, copy["database"]["id"]))["uri"]
    assert rows(copy_uri, "sentinel") == [(1, noted[-1][1])]


async def base_backup_taken(client: PlatformClient, tenant: Tenant, database_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (found := await window(client, tenant, database_id))["base_backups"] == 0:
        assert time.monotonic() < deadline, "the host never took its first base backup"
        await asyncio.sleep(0.5)
    return found


async def test_a_moment_seconds_old_restores_exactly(pitr: PlatformClient) -> None:
    """While the host is up the window reaches the present: no waiting for a WAL segment to fill
    or for archive_timeout, and a moment 5 s old comes back exactly."""
    client, stack = pitr, pitr.stack
    tenant = await client.tenant()
    first_id, _ = await ready_database(client, tenant, "first")
    await base_backup_taken(client, tenant, first_id)
    database_id, uri = await ready_database(client, tenant, "recent")
    opened = await window(client, tenant, database_id)
    assert opened["host_up"] and opened["earliest"] is not None, opened  # open from the start
    with connect(uri) as conn:
        conn.execute("CREATE TABLE sentinel (id int PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO sentinel VALUES (1, 'before')")
    await asyncio.sleep(0.2)
    moment = db_now(uri)
    await asyncio.sleep(0.2)
    with connect(uri) as conn:
        conn.execute("UPDATE sentinel SET value = 'after'")
    committed = db_now(uri)
    latest = datetime.fromisoformat((await window(client, tenant, database_id))["latest"])
    assert latest >= committed  # the window's end is the present, not the last archived segment
    await asyncio.sleep(max(0.0, 5 - (db_now(uri) - moment).total_seconds()))
    operation = await restore_to(client, tenant, database_id, moment)
    assert operation["status"] == "succeeded", operation
    assert rows(uri, "sentinel") == [(1, "before")]

    stack.stop_process("agent")  # a host that does not answer: the window ends at the archive again
    try:
        deadline = time.monotonic() + 60
        while (down := await window(client, tenant, database_id))["host_up"]:
            assert time.monotonic() < deadline, "the agent's heartbeat never went stale"
            await asyncio.sleep(1)
        assert down["latest"] == down["last_archived_at"] or down["latest"] is None, down
        body = {"point_in_time": db_now(uri).isoformat(), "target": "in_place"}
        refused = await client.http.post(f"/databases/{database_id}/restore", json=body, headers=tenant.headers)
        assert refused.status_code == 422, refused.text
        assert "not covered by archived WAL" in refused.json()["error"]["message"]
    finally:
        stack.start_process("agent")


async def test_a_restore_leaves_the_other_tenants_files_in_the_archive(pitr: PlatformClient) -> None:
    client, stack = pitr, pitr.stack
    tenant, neighbour = await client.tenant(), await client.tenant()
    database_id, uri = await ready_database(client, tenant, "mine")
    _, neighbour_uri = await ready_database(client, neighbour, "theirs")
    with connect(neighbour_uri) as conn:
        conn.execute("CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 1000) g")
    bases = (await base_backup_taken(client, tenant, database_id))["base_backups"]
    stack.stop_process("agent")  # a new base backup, which holds both databases
    stack.start_process("agent", {"PGPLANE_BASE_BACKUP_INTERVAL_SECONDS": "1"})
    deadline = time.monotonic() + 120
    while (await window(client, tenant, database_id))["base_backups"] == bases:
        assert time.monotonic() < deadline, "no new base backup"
        await asyncio.sleep(0.5)
    stack.stop_process("agent")
    stack.start_process("agent")
    taken = datetime.now(UTC)
    while (last := (await window(client, tenant, database_id))["last_archived_at"]) is None or (
        datetime.fromisoformat(last) <= taken
    ):
        with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:  # its WAL archived: it is
            conn.execute("SELECT txid_current()")  # the newest base backup a restore can start from
            conn.execute("SELECT pg_switch_wal()")
        assert time.monotonic() < deadline, "the new base backup's WAL was never archived"
        await asyncio.sleep(0.5)
    with connect(neighbour_uri) as conn:  # marks the pages all-visible: WAL without their images
        conn.execute("VACUUM items")
        conn.execute("VACUUM FULL items")  # and a new relation file, written through WAL
    with connect(uri) as conn:
        conn.execute("CREATE TABLE sentinel (id int PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO sentinel VALUES (1, 'kept')")
    await asyncio.sleep(0.2)
    moment = db_now(uri)
    await asyncio.sleep(0.2)
    with connect(uri) as conn:
        conn.execute("UPDATE sentinel SET value = 'lost'")
        own = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    with connect(neighbour_uri) as conn:
        theirs = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    assert own is not None and theirs is not None
    store = stack_store(stack)
    stored = await store.keys(f"base/{stack.host_id}/")
    assert [k for k in stored if k.endswith(f"/{own[0]}.tar.gz.enc")], stored  # each database stored apart
    for key in [k for k in stored if k.endswith(f"/{theirs[0]}.tar.gz.enc")]:
        await store.delete(key)  # a restore that fetched the neighbour's part would now fail
    await store.close()
    operation = await restore_to(client, tenant, database_id, moment)
    assert operation["status"] == "succeeded", operation
    assert rows(uri, "sentinel") == [(1, "kept")]
    assert left_out(stack, operation["id"]) >= 1  # the neighbour's files never left the archive
    assert rows(neighbour_uri) == [(g,) for g in range(1, 1001)]
    assert_clean(stack)


async def test_missing_wal_segment_fails_loudly_and_changes_nothing(pitr: PlatformClient) -> None:
    client, stack = pitr, pitr.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "gappy")
    noted = await sentinel_history(client, tenant, database_id, uri)
    await archived_past(client, tenant, database_id, noted[-1][0])
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        segments = [r[0] for r in conn.execute("SELECT segment FROM wal_segments ORDER BY segment").fetchall()]
    assert len(segments) >= 3
    store = stack_store(stack)
    # one in the middle, before the target (this test runs last: the gap would break later restores)
    await store.delete(wal_object_key(stack.host_id, segments[-2]))
    await store.close()
    operation = await restore_to(client, tenant, database_id, noted[-1][0])
    assert operation["status"] == "compensated", operation
    assert f"WAL segment {segments[-2]} is missing" in operation["error"]
    assert rows(uri, "sentinel") == [(1, "third")]
    assert_clean(stack)
