"""One tenant can neither see nor connect to another tenant's database."""

from __future__ import annotations

import psycopg
import pytest

from tests.platform_client import PlatformClient


async def test_tenants_are_isolated(client: PlatformClient) -> None:
    alice, bob = await client.tenant("alice"), await client.tenant("bob")
    a = await client.create_database(alice, "shop")
    b = await client.create_database(bob, "shop")  # same name, other project: fine
    await client.succeeded(alice, a["operation"]["id"])
    await client.succeeded(bob, b["operation"]["id"])
    alice_creds = await client.credentials(alice, a["database"]["id"])
    bob_db = b["database"]

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=alice_creds["host"],
            port=alice_creds["port"],
            dbname=bob_db["dbname"],
            user=alice_creds["user"],
            password=alice_creds["password"],
            connect_timeout=5,
        ).close()

    for method, path in [
        ("GET", f"/databases/{bob_db['id']}"),
        ("GET", f"/databases/{bob_db['id']}/credentials"),
        ("DELETE", f"/databases/{bob_db['id']}"),
        ("POST", f"/databases/{bob_db['id']}/reset"),
        ("POST", f"/databases/{bob_db['id']}/rotate-credentials"),
        ("GET", f"/operations/{b['operation']['id']}"),
        ("GET", f"/databases?project_id={bob.project_id}"),
        ("GET", f"/audit-log?project_id={bob.project_id}"),
    ]:
        response = await client.http.request(method, path, headers=alice.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    created = await client.http.post(
        "/databases", json={"project_id": bob.project_id, "name": "x"}, headers=alice.headers
    )
    assert created.status_code == 404
    assert (await client.http.get("/databases", headers={"Authorization": "Bearer nope"})).status_code == 401
