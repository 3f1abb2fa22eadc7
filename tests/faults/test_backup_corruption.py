"""A damaged, swapped or missing backup object is refused before anything changes: the restore
ends ``compensated`` with a clear reason and the database keeps its current data."""

from __future__ import annotations

from tests.backup_helpers import (
    backup,
    connect,
    host_databases,
    object_bytes,
    one_piece,
    ready_database,
    restore,
    rows,
    stack_store,
)
from tests.platform_client import PlatformClient


def flip_bit(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


async def test_damaged_backups_are_refused_before_anything_changes(backup_client: PlatformClient) -> None:
    client, stack = backup_client, backup_client.stack
    tenant = await client.tenant()
    database_id, uri = await ready_database(client, tenant, "precious")
    with connect(uri) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
    first = await backup(client, tenant, database_id)
    with connect(uri) as conn:
        conn.execute("INSERT INTO items VALUES (0, 'after the first backup')")
    second = await backup(client, tenant, database_id)
    with connect(uri) as conn:
        conn.execute("INSERT INTO items VALUES (-1, 'the live data')")
    live = rows(uri)

    store = stack_store(stack)
    key = f"backups/{tenant.project_id}/{database_id}/{first['id']}.pgdump.enc"
    good = await object_bytes(store, key)
    other = await object_bytes(store, f"backups/{tenant.project_id}/{database_id}/{second['id']}.pgdump.enc")
    damages = {
        "truncated": (good[:-100], "checksum"),
        "bit flipped": (flip_bit(good), "checksum"),
        "another backup's object": (other, "checksum"),
        "deleted": (None, "missing"),
    }
    for damage, (stored, reason) in damages.items():
        if stored is None:
            await store.delete(key)
        else:
            await store.put(key, one_piece(stored))
        operation = await restore(client, tenant, first["id"], target="in_place")
        assert operation["status"] == "compensated", (damage, operation)
        assert reason in operation["error"], (damage, operation["error"])
        assert [s["name"] for s in operation["steps"]] == ["backup_downloaded"], damage
        assert rows(uri) == live, damage
        assert host_databases(stack, "rs_") == [] and host_databases(stack, "ro_") == []

    copy = await restore(client, tenant, first["id"], target="new_database", name="never-made")
    assert copy["status"] == "compensated" and "missing" in copy["error"]
    assert client.host_has(copy["database"]["dbname"], copy["database"]["user"]) == (0, 0)
    await store.put(key, one_piece(flip_bit(good)))
    download = await client.http.get(f"/backups/{first['id']}/download", headers=tenant.headers)
    assert download.status_code == 409 and download.json()["error"]["code"] == "backup_damaged"
    await store.close()
    assert list((stack.work_dir).glob("*")) == []  # no download left behind
