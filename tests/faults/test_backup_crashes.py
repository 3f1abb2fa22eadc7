"""Kill the agent in the middle of an upload and in the middle of a restore: after a restart the
operation finishes, exactly one object exists, no incomplete upload, scratch database or
download is left, and the original database was never touched before the swap."""

from __future__ import annotations

import httpx

from devstack.cluster import Cluster
from devstack.faults import CRASH_EXIT_CODE, InjectedFaults
from devstack.s3_server import S3Server
from devstack.stack import Stack
from tests.backup_helpers import (
    connect,
    host_databases,
    ready_database,
    rows,
    stack_store,
)
from tests.platform_client import PlatformClient
from tests.replay import replay_matches
from tests.stacks import started_stack

BLOBS = (
    "CREATE TABLE blobs AS SELECT g AS id, decode(md5(g::text) || md5((g + 1)::text), 'hex') AS data"
    " FROM generate_series(1, 400000) g"
)  # about 13 MB of dump that does not compress away: the upload spans several parts


def restart_agent_crashing_at(stack: Stack, crash_at: str) -> None:
    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(crash_at=crash_at))


async def test_agent_killed_mid_upload_and_mid_restore(backup_client: PlatformClient) -> None:
    client, stack = backup_client, backup_client.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "big")
    with connect(uri) as conn:
        conn.execute(BLOBS)
        conn.execute("CREATE TABLE marks (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO marks VALUES (1, 'backed up')")
    prefix = f"backups/{tenant.project_id}/{database_id}/"
    store = stack_store(stack)

    restart_agent_crashing_at(stack, "backup.uploading")
    accepted = await client.http.post(f"/databases/{database_id}/backups", headers=tenant.headers)
    assert accepted.status_code == 202
    assert stack.procs["agent"].wait(timeout=120) == CRASH_EXIT_CODE
    assert await store.incomplete_uploads(prefix) != []  # it really died with an upload open
    assert await store.keys(prefix) == []
    stack.start_process("agent")
    await client.succeeded(tenant, accepted.json()["operation"]["id"])
    backup_id = accepted.json()["backup"]["id"]
    assert await store.keys(prefix) == [f"{prefix}{backup_id}.pgdump.enc"]
    assert await store.incomplete_uploads(prefix) == []

    with connect(uri) as conn:
        conn.execute("UPDATE marks SET note = 'changed after the backup'")
    restart_agent_crashing_at(stack, "restore.restoring")
    restore = await client.http.post(
        f"/backups/{backup_id}/restore", json={"target": "in_place"}, headers=tenant.headers
    )
    assert restore.status_code == 202
    assert stack.procs["agent"].wait(timeout=120) == CRASH_EXIT_CODE
    assert rows(uri, "marks") == [(1, "changed after the backup")]  # the original is untouched so far
    stack.start_process("agent")
    await client.succeeded(tenant, restore.json()["operation"]["id"])
    assert rows(uri, "marks") == [(1, "backed up")]
    with connect(uri) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (400000,)
    assert host_databases(stack, "rs_") == [] and host_databases(stack, "ro_") == []
    assert list((stack.work_dir).glob("*")) == []
    await store.close()
    replay_matches(stack)


async def test_backup_over_the_plan_limit_fails_cleanly(cluster: Cluster, s3_server: S3Server) -> None:
    for stack in started_stack(cluster, "s3", s3_server, PGPLANE_BACKUP_MAX_BYTES_FREE=str(9 * 2**20)):
        async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=30) as http:
            client = PlatformClient(http, stack)
            tenant = await client.tenant()
            database_id, uri = await ready_database(client, tenant, "toobig")
            with connect(uri) as conn:
                conn.execute(BLOBS)
            accepted = await http.post(f"/databases/{database_id}/backups", headers=tenant.headers)
            operation = await client.wait(tenant, accepted.json()["operation"]["id"])
            assert operation["status"] == "compensated", operation
            assert "exceeds the plan limit of 9437184 bytes" in operation["error"]
            failed = (await http.get(f"/backups/{accepted.json()['backup']['id']}", headers=tenant.headers)).json()
            assert failed["status"] == "failed" and failed["sha256"] is None
            store = stack_store(stack)
            prefix = f"backups/{tenant.project_id}/"
            assert await store.keys(prefix) == [] and await store.incomplete_uploads(prefix) == []
            await store.close()
            restore = await http.post(
                f"/backups/{failed['id']}/restore", json={"target": "in_place"}, headers=tenant.headers
            )
            assert restore.status_code == 409 and restore.json()["error"]["code"] == "backup_not_completed"
