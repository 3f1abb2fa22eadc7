"""Project tokens: a retried creation with the same Idempotency-Key makes one token and shows its
secret again (the first response may have been lost); the key with another body is refused;
listing, revocation, expiry; and scopes: a token does only what they allow (403, nothing changed)."""

from __future__ import annotations

import psycopg

from devstack.stack import Stack
from infra.tokens import parse_token
from tests.platform_client import PlatformClient, new_key
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own (and the throttle test from an address of its own)


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
        assert conn.execute("SELECT count(*) FROM api_tokens WHERE project_id = %s", (project["id"],)).fetchone() == (
            1,
        )
        stored = conn.execute("SELECT response::text FROM idempotency_keys WHERE key = %s", (key,)).fetchall()
    parsed = parse_token(token)
    assert parsed is not None
    assert stored and all(parsed[1] not in row[0] for row in stored)  # the secret is not stored in clear


async def test_tokens_are_listed_revoked_and_minted_only_by_the_admin(client: PlatformClient) -> None:
    tenant = await client.tenant()
    tokens = f"/projects/{tenant.project_id}/tokens"
    minted = await client.http.post(tokens, json={"name": "other"}, headers=tenant.headers)
    assert minted.status_code == 403  # a project token cannot mint tokens
    listed = (await client.http.get(tokens, headers=client.admin)).json()
    assert [t["name"] for t in listed["data"]] == ["ci"] and "token" not in listed["data"][0]
    assert listed["data"][0]["last_used_at"] is None or listed["data"][0]["last_used_at"]
    assert (await client.http.get("/databases", headers=tenant.headers)).status_code == 200
    used = (await client.http.get(tokens, headers=client.admin)).json()["data"][0]
    assert used["last_used_at"] is not None and used["scopes"] == ["read", "write", "admin"]
    revoked = await client.http.delete(f"{tokens}/{used['id']}", headers=client.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.http.get("/databases", headers=tenant.headers)).status_code == 401  # at once
    again = await client.http.delete(f"{tokens}/{used['id']}", headers=client.admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    audit = (await client.http.get(f"/audit-log?project_id={tenant.project_id}", headers=client.admin)).json()
    assert [e["action"] for e in audit["data"]].count("api_token.revoke") == 1


async def test_a_token_stops_at_its_expiry_and_a_forged_one_at_its_checksum(
    client: PlatformClient, stack: Stack
) -> None:
    project = (await client.http.post("/projects", json={"name": "acme"}, headers=client.admin)).json()
    made = await client.http.post(
        f"/projects/{project['id']}/tokens", json={"name": "short", "expires_in_days": 1}, headers=client.admin
    )
    token = made.json()["token"]
    assert made.json()["expires_at"] and token.startswith("pgp_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.http.get("/databases", headers=headers)).status_code == 200
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db), autocommit=True) as conn:
        conn.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s", (made.json()["id"],)
        )
    assert (await client.http.get("/databases", headers=headers)).status_code == 401
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert (await client.http.get("/databases", headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_wrong_tokens_are_throttled(client: PlatformClient) -> None:
    tenant = await client.tenant()
    guesser = {"X-Forwarded-For": "198.51.100.7"}  # a client of its own, behind a proxy on loopback
    wrong = guesser | {"Authorization": "Bearer pgp_" + "0" * 32 + "_" + "x" * 43 + "_000000"}
    codes = [(await client.http.get("/databases", headers=wrong)).status_code for _ in range(10)]
    assert codes == [401] * 10
    throttled = await client.http.get("/databases", headers=wrong)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert throttled.json()["error"]["code"] == "too_many_failed_attempts"
    right = await client.http.get("/databases", headers=guesser | tenant.headers)
    assert right.status_code == 429  # a right guess now would not be confirmed either
    elsewhere = await client.http.get("/databases", headers=tenant.headers)
    assert elsewhere.status_code == 200  # other clients are not locked out


async def test_projects_are_listed_and_deleted_once_empty(client: PlatformClient) -> None:
    tenant, other = await client.tenant("acme"), await client.tenant("other")
    mine = (await client.http.get("/projects", headers=tenant.headers)).json()
    assert [p["id"] for p in mine["data"]] == [tenant.project_id]
    assert (await client.http.get(f"/projects/{other.project_id}", headers=tenant.headers)).status_code == 404
    everything = (await client.http.get("/projects", headers=client.admin)).json()
    assert {tenant.project_id, other.project_id} <= {p["id"] for p in everything["data"]}
    accepted = await client.create_database(tenant, "app")
    await client.succeeded(tenant, accepted["operation"]["id"])
    busy = await client.http.delete(f"/projects/{tenant.project_id}", headers=client.admin)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "project_not_empty"
    gone = await client.http.delete(f"/databases/{accepted['database']['id']}", headers=tenant.headers)
    await client.succeeded(tenant, gone.json()["operation"]["id"])
    assert (await client.http.delete(f"/projects/{tenant.project_id}", headers=tenant.headers)).status_code == 403
    deleted = await client.http.delete(f"/projects/{tenant.project_id}", headers=client.admin)
    assert deleted.status_code == 200
    assert (await client.http.get("/databases", headers=tenant.headers)).status_code == 401  # its tokens too
    assert (await client.http.get(f"/projects/{tenant.project_id}", headers=client.admin)).status_code == 404
    created = await client.http.post(
        "/databases", json={"project_id": tenant.project_id, "name": "x"}, headers=client.admin
    )
    assert created.status_code == 404


async def test_a_token_does_only_what_its_scopes_allow(client: PlatformClient) -> None:
    tenant = await client.tenant()
    tokens = f"/projects/{tenant.project_id}/tokens"

    async def token(*scopes: str) -> dict[str, str]:
        body = {"name": "-".join(scopes), "scopes": list(scopes)} if scopes else {"name": "default"}
        made = await client.http.post(tokens, json=body, headers=client.admin)
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['token']}"}

    reader, writer, admin = await token("read"), await token(), await token("admin")
    create = {"project_id": tenant.project_id, "name": "app"}
    assert (await client.http.get("/databases", headers=reader)).status_code == 200
    refused = await client.http.post("/databases", json=create, headers=reader)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    listed = (await client.http.get("/databases", headers=reader)).json()
    assert listed["count"] == 0  # the refused request changed nothing

    hook = {"project_id": tenant.project_id, "url": "http://127.0.0.1:9/hook"}
    assert (
        await client.http.get("/webhooks", params={"project_id": tenant.project_id}, headers=writer)
    ).status_code == 200
    assert (await client.http.post("/webhooks", json=hook, headers=writer)).status_code == 403
    assert (await client.http.post("/webhooks", json=hook, headers=admin)).status_code == 201
    accepted = await client.http.post("/databases", json=create, headers=writer)
    assert accepted.status_code == 202, accepted.text

    scopes = {t["name"]: t["scopes"] for t in (await client.http.get(tokens, headers=client.admin)).json()["data"]}
    assert scopes == {
        "ci": ["read", "write", "admin"],
        "read": ["read"],
        "default": ["read", "write"],
        "admin": ["admin"],
    }
    bad = await client.http.post(tokens, json={"name": "x", "scopes": ["read", "read"]}, headers=client.admin)
    assert bad.status_code == 422
    unknown = await client.http.post(tokens, json={"name": "x", "scopes": ["root"]}, headers=client.admin)
    assert unknown.status_code == 422
