"""Backup master keys stay on the data host: the API holds none and still streams downloads, with
one backup's data key at a time from the agent's key service, which answers signed requests only.
A deleted database's backups stay restorable for the plan's retention, then are purged."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import nats

from devstack.stack import Stack
from entrypoints import control_plane
from infra.metadata.engine import make_engine
from infra.secrets import new_host_key
from producers.scheduler import BackupScheduler
from schemas.commands import RevealDataKey
from schemas.envelope import Envelope
from schemas.subjects import Subjects
from tests.backup_helpers import backup, ready_database, restore, stack_store
from tests.platform_client import PlatformClient
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own


async def test_the_api_streams_downloads_without_master_keys(client: PlatformClient, stack: Stack) -> None:
    assert "PGPLANE_BACKUP_KEYS" not in stack.env("api")
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "app")
    taken = await backup(client, tenant, database_id)
    download = await client.http.get(f"/backups/{taken['id']}/download", headers=tenant.headers)
    assert download.status_code == 200 and download.content.startswith(b"PGDMP")

    _, public = new_host_key()  # an unsigned request for the same key is refused
    request = RevealDataKey(backup_id=uuid.UUID(taken["id"]), key_id="k1", salt="A" * 43 + "=", reply_key=public)
    envelope = Envelope.wrap(request, correlation_id=uuid.uuid4(), sequence=0, actor="x", project_id=uuid.uuid4())
    nc = await nats.connect(**stack.nats())
    reply = await nc.request(
        Subjects(namespace=stack.namespace).key_service(stack.host_id), envelope.model_dump_json().encode(), timeout=5
    )
    await nc.close()
    assert json.loads(reply.data) == {"error": "the command is not signed"}


async def test_a_deleted_databases_backups_are_purged_after_the_retention(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "leaving")
    taken = await backup(client, tenant, database_id)
    deleted = await client.http.delete(f"/databases/{database_id}", headers=tenant.headers)
    kept_until = datetime.fromisoformat(deleted.json()["backups_kept_until"])
    assert abs(kept_until - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)  # the free plan's
    await client.succeeded(tenant, deleted.json()["operation"]["id"])
    copy = await restore(client, tenant, taken["id"], target="new_database", name="revived")
    assert copy["status"] == "succeeded", copy  # still restorable meanwhile

    settings = stack.settings("scheduler")
    engine = make_engine(settings.metadata_dsn, pool_size=1)
    scheduler = BackupScheduler(engine, settings, control_plane.outbox(settings))
    await scheduler.tick(datetime.now(UTC) + timedelta(days=6))
    assert (await client.http.get(f"/backups/{taken['id']}", headers=tenant.headers)).json()["status"] == "completed"
    await scheduler.tick(datetime.now(UTC) + timedelta(days=8))  # the API's outbox relay publishes the deletion
    await engine.dispose()
    deadline = time.monotonic() + 60
    while (await client.http.get(f"/backups/{taken['id']}", headers=tenant.headers)).status_code != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    store = stack_store(stack)
    assert await store.keys(f"backups/{tenant.project_id}/{database_id}/") == []
    await store.close()
    audit = (await client.http.get("/audit-log", headers=tenant.headers)).json()["data"]
    purged = [e for e in audit if e["action"] == "backup.delete" and e["resource_id"] == database_id]
    assert {(e["outcome"], e["detail"].get("trigger")) for e in purged} >= {("requested", "retention")}
    assert any(e["outcome"] == "succeeded" for e in purged)
