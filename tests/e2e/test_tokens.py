"""Project tokens: a retried creation with the same Idempotency-Key makes one token and shows its
secret again (the first response may have been lost); the key with another body is refused."""

from __future__ import annotations

import psycopg

from devstack.stack import Stack
from tests.platform_client import PlatformClient, new_key


async def test_token_creation_is_idempotent(client: PlatformClient, stack: Stack) -> None:
    project = (await client.http.post("/projects", json={"name": "acme"}, headers=client.admin)).json()
    key = new_key()
    headers = client.admin | {"Idempotency-Key": key}
    first = await client.http.post(f"/projects/{project['id']}/tokens", json={"name": "ci"}, headers=headers)
    again = await client.http.post(f"/projects/{project['id']}/tokens", json={"name": "ci"}, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json()
    token = first.json()["token"]
    listed = await client.http.get(
        f"/databases?project_id={project['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    other = await client.http.post(f"/projects/{project['id']}/tokens", json={"name": "other"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (1,)
        stored = conn.execute("SELECT response::text FROM idempotency_keys").fetchall()
    assert stored and all(token.split("_")[-1] not in row[0] for row in stored)  # the secret is not stored in clear
