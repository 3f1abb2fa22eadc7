"""A user's backup story, through HTTP, on the filesystem store and on S3: back up, damage the
data, restore in place (same credentials), restore into a new database, drill, download."""

from __future__ import annotations

from tests.backup_helpers import (
    backup,
    connect,
    host_databases,
    object_bytes,
    ready_database,
    restore,
    rows,
    stack_store,
)
from tests.platform_client import PlatformClient
from tests.replay import replay_matches

ORIGINAL = [(i, f"row {i}") for i in range(1, 101)]


async def test_backup_restore_in_place_and_to_new_database(backup_client: PlatformClient) -> None:
    client, stack = backup_client, backup_client.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "shop")
    with connect(uri) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)")
        conn.cursor().executemany("INSERT INTO items VALUES (%s, %s)", ORIGINAL)

    taken = await backup(client, tenant, database_id)
    assert taken["size_bytes"] > 0 and len(taken["sha256"]) == 64 and taken["key_id"] == "k1"
    store = stack_store(stack)
    stored = await object_bytes(store, f"backups/{tenant.project_id}/{database_id}/{taken['id']}.pgdump.enc")
    for plaintext in (b"PGDMP", b"CREATE TABLE", b"items", b"row 1"):
        assert plaintext not in stored  # pg_dump's header and table of contents are not compressed
    await store.close()

    with connect(uri) as conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id <= 10")
        conn.execute("DELETE FROM items WHERE id > 50")
        conn.execute("CREATE TABLE extra (id int)")

    in_place = await restore(client, tenant, taken["id"], target="in_place")
    assert in_place["status"] == "succeeded", in_place
    assert [s["name"] for s in in_place["steps"]] == [
        "backup_downloaded",
        "scratch_restored",
        "swapped_in",
        "original_dropped",
        "work_cleaned",
    ]
    assert rows(uri) == ORIGINAL  # the same credentials, exactly the backed-up rows
    with connect(uri) as conn:
        assert conn.execute("SELECT to_regclass('extra')").fetchone() == (None,)
        conn.execute("INSERT INTO items VALUES (1000, 'the tenant still owns its tables')")
    assert host_databases(stack, "rs_") == [] and host_databases(stack, "ro_") == []

    copy = await restore(client, tenant, taken["id"], target="new_database", name="shop-copy")
    assert copy["status"] == "succeeded", copy
    copy_uri = (await client.credentials(tenant, copy["database"]["id"]))["uri"]
    assert rows(copy_uri) == ORIGINAL
    assert rows(uri) == [*ORIGINAL, (1000, "the tenant still owns its tables")]  # both exist, apart
    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert {d["name"]: d["status"] for d in listed["data"]} == {"shop": "available", "shop-copy": "available"}

    verify = await client.http.post(f"/backups/{taken['id']}/verify", headers=tenant.headers)
    assert verify.status_code == 202, verify.text
    await client.succeeded(tenant, verify.json()["operation"]["id"])
    verified = (await client.http.get(f"/backups/{taken['id']}", headers=tenant.headers)).json()
    assert verified["verified_tables"] == 1 and verified["verify_duration_ms"] > 0
    database = (await client.http.get(f"/databases/{database_id}", headers=tenant.headers)).json()
    assert database["last_verified_backup_id"] == taken["id"]
    assert database["last_verified_restore_at"] == verified["last_verified_at"]

    download = await client.http.get(f"/backups/{taken['id']}/download", headers=tenant.headers)
    assert download.status_code == 200
    assert download.content.startswith(b"PGDMP") and len(download.content) == taken["dump_bytes"]

    audit = (await client.http.get("/audit-log", headers=tenant.headers)).json()
    outcomes = {(e["action"], e["outcome"]) for e in audit["data"]}
    for action in ("backup.create", "backup.restore", "backup.restore_new_database", "backup.verify"):
        assert (action, "requested") in outcomes and (action, "succeeded") in outcomes
    assert ("backup.download", "succeeded") in outcomes
    replay_matches(stack)
