"""Backups under the same rules as everything else: another tenant's backup is a 404 whatever
the verb, bad input is a 422 that publishes nothing, an Idempotency-Key returns the same backup."""

from __future__ import annotations

import psycopg

from devstack.stack import Stack
from tests.backup_helpers import backup, ready_database
from tests.e2e.test_bad_input import host_database_count
from tests.platform_client import PlatformClient, new_key
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own; the counts below are taken around its own requests


def queued_messages(stack: Stack) -> int:
    """Every command and event leaves through the outbox: an unchanged count means nothing was sent."""
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert row is not None
    return int(row[0])


async def test_backups_of_other_tenants_are_not_found(client: PlatformClient, stack: Stack) -> None:
    alice, bob = await client.tenant("alice"), await client.tenant("bob")
    alice_db, _ = await ready_database(client, alice, "mine")
    bob_db, _ = await ready_database(client, bob, "theirs")
    bobs = await backup(client, bob, bob_db)
    before = queued_messages(stack)
    for method, path, body in [
        ("GET", f"/backups/{bobs['id']}", None),
        ("DELETE", f"/backups/{bobs['id']}", None),
        ("GET", f"/backups/{bobs['id']}/download", None),
        ("POST", f"/backups/{bobs['id']}/verify", None),
        ("POST", f"/backups/{bobs['id']}/restore", {"target": "in_place"}),
        ("POST", f"/backups/{bobs['id']}/restore", {"target": "new_database", "name": "stolen"}),
        ("GET", f"/databases/{bob_db}/backups", None),
        ("POST", f"/databases/{bob_db}/backups", None),
        ("GET", f"/databases/{bob_db}/backup-policy", None),
        ("PUT", f"/databases/{bob_db}/backup-policy", {"schedule": "daily"}),
    ]:
        response = await client.http.request(method, path, json=body, headers=alice.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert queued_messages(stack) == before
    listed = (await client.http.get("/databases", headers=alice.headers)).json()
    assert [d["id"] for d in listed["data"]] == [alice_db]  # nothing restored into alice's project


async def test_bad_backup_requests_change_nothing(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "app")
    key = new_key()
    first = await client.http.post(
        f"/databases/{database_id}/backups", headers=tenant.headers | {"Idempotency-Key": key}
    )
    again = await client.http.post(
        f"/databases/{database_id}/backups", headers=tenant.headers | {"Idempotency-Key": key}
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["backup"]["id"] == again.json()["backup"]["id"]
    await client.succeeded(tenant, first.json()["operation"]["id"])
    backup_id = first.json()["backup"]["id"]
    before, databases = queued_messages(stack), host_database_count(stack)
    for body in [
        {},
        {"target": "elsewhere"},
        {"target": "new_database"},
        {"target": "new_database", "name": "Bad Name"},
        {"target": "new_database", "name": "postgres"},
        {"target": "new_database", "name": "x'; DROP DATABASE postgres; --"},
        {"target": "in_place", "name": "app2"},
        {"target": "in_place", "project_id": tenant.project_id},
    ]:
        response = await client.http.post(f"/backups/{backup_id}/restore", json=body, headers=tenant.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["message"], body
    for policy in [
        {"schedule": "whenever"},
        {"schedule": "* * * * *"},  # more often than the hourly minimum
        {"schedule": "daily", "retain_days": 0},
        {"schedule": "daily", "keep_last": -1},
        {"schedule": "daily", "extra": True},
    ]:
        response = await client.http.put(f"/databases/{database_id}/backup-policy", json=policy, headers=tenant.headers)
        assert response.status_code == 422, (policy, response.text)
    taken = await client.http.post(
        f"/backups/{backup_id}/restore", json={"target": "new_database", "name": "app"}, headers=tenant.headers
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "name_taken"
    assert queued_messages(stack) == before
    assert host_database_count(stack) == databases
    missing = await client.http.get(f"/databases/{database_id}/backup-policy", headers=tenant.headers)
    assert missing.status_code == 404


async def test_no_backup_while_the_database_is_being_deleted(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    database_id, _ = await ready_database(client, tenant, "leaving")
    stack.stop_process("agent")  # the delete stays in flight
    delete = await client.http.delete(f"/databases/{database_id}", headers=tenant.headers)
    assert delete.status_code == 202, delete.text
    before = queued_messages(stack)
    response = await client.http.post(f"/databases/{database_id}/backups", headers=tenant.headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "operation_in_progress"
    assert queued_messages(stack) == before
    stack.start_process("agent")
    await client.succeeded(tenant, delete.json()["operation"]["id"])
    gone = await client.http.post(f"/databases/{database_id}/backups", headers=tenant.headers)
    assert gone.status_code == 404
