"""Public events: a project's lifecycle as a numbered list and as a Server-Sent Events stream
that resumes with no gap and no duplicate; one tenant never sees another's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.platform_client import PlatformClient, Tenant
from tests.stacks import shared_stack

stack = shared_stack({"PGPLANE_EVENTS_KEEPALIVE_SECONDS": "1", "PGPLANE_EVENTS_POLL_SECONDS": "0.1"})


async def created(client: PlatformClient, tenant: Tenant, name: str) -> dict[str, Any]:
    accepted = await client.create_database(tenant, name)
    await client.succeeded(tenant, accepted["operation"]["id"])
    database: dict[str, Any] = accepted["database"]
    return database


async def test_a_projects_events_in_order_paged_filtered_and_private(client: PlatformClient) -> None:
    alice, bob = await client.tenant("alice"), await client.tenant("bob")
    first = await created(client, alice, "first")
    rotate = await client.http.post(f"/databases/{first['id']}/rotate-credentials", headers=alice.headers)
    await client.succeeded(alice, rotate.json()["operation"]["id"])
    second = await created(client, alice, "second")

    page = await client.http.get("/events", params={"project_id": alice.project_id}, headers=alice.headers)
    assert page.status_code == 200, page.text
    events = page.json()["data"]
    assert [(e["sequence"], e["type"], e["subject"]) for e in events] == [
        (1, "database.created", f"databases/{first['id']}"),
        (2, "database.credentials_rotated", f"databases/{first['id']}"),
        (3, "database.created", f"databases/{second['id']}"),
    ]
    assert page.json()["next_after"] == 3
    event = events[1]
    assert {k: event[k] for k in ("specversion", "datacontenttype", "source")} == {
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "source": f"/projects/{alice.project_id}",
    }
    assert event["data"] == {
        "project_id": alice.project_id,
        "database_id": first["id"],
        "operation_id": rotate.json()["operation"]["id"],
        "credentials_version": 2,
    }
    assert "password" not in page.text

    paged = await client.http.get(
        "/events", params={"project_id": alice.project_id, "after": 1, "limit": 1}, headers=alice.headers
    )
    assert [e["sequence"] for e in paged.json()["data"]] == [2] and paged.json()["next_after"] == 2
    rotations = await client.http.get(
        "/events",
        params={"project_id": alice.project_id, "type": "database.credentials_rotated"},
        headers=alice.headers,
    )
    assert [e["sequence"] for e in rotations.json()["data"]] == [2]
    unknown = await client.http.get(
        "/events", params={"project_id": alice.project_id, "type": "database.exploded"}, headers=alice.headers
    )
    assert unknown.status_code == 422 and "database.created" in unknown.text  # the message lists the types
    for path in ("/events", "/events/stream"):  # past a bigint: refused before anything is sent
        huge = await client.http.get(
            path, params={"project_id": alice.project_id, "after": 2**63}, headers=alice.headers
        )
        assert huge.status_code == 422, (path, huge.text)

    for path in ("/events", "/events/stream"):
        theirs = await client.http.get(path, params={"project_id": alice.project_id}, headers=bob.headers)
        assert theirs.status_code == 404, (path, theirs.text)
    mine = await client.http.get("/events", params={"project_id": bob.project_id}, headers=bob.headers)
    assert mine.json() == {"data": [], "next_after": 0}
    schemas = (await client.http.get("/events/schemas", headers=bob.headers)).json()
    assert schemas["database.credentials_rotated"]["required"] == [
        "project_id",
        "database_id",
        "operation_id",
        "credentials_version",
    ]


async def read_stream(
    http: httpx.AsyncClient, tenant: Tenant, *, last_event_id: str | None = None
) -> AsyncIterator[tuple[str, str, str]]:
    """(id, event, data) of each message, and ("", "", comment) for each comment line."""
    headers = tenant.headers | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    async with http.stream(
        "GET", "/events/stream", params={"project_id": tenant.project_id}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                yield "", "", line
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                yield fields["id"], fields["event"], fields["data"]
                fields = {}
            else:
                fields = {}


async def test_a_reconnect_with_last_event_id_gets_exactly_what_was_missed(client: PlatformClient) -> None:
    tenant = await client.tenant()
    await created(client, tenant, "before")
    seen: list[int] = []
    keepalive = False
    async for event_id, event_type, data in read_stream(client.http, tenant):
        if not event_id:
            keepalive = True  # the stream has nothing more: an idle comment comes within a second
            break
        assert event_type == "database.created" and json.loads(data)["sequence"] == int(event_id)
        seen.append(int(event_id))
    assert seen == [1] and keepalive

    missed = [await created(client, tenant, name) for name in ("during-1", "during-2")]
    resumed: list[tuple[int, str]] = []
    async for event_id, _, data in read_stream(client.http, tenant, last_event_id=str(seen[-1])):
        if event_id:
            resumed.append((int(event_id), json.loads(data)["data"]["database_id"]))
        if len(resumed) == 2:
            break
    assert resumed == [(2, missed[0]["id"]), (3, missed[1]["id"])]

    again: list[int] = []
    async for event_id, _, _ in read_stream(client.http, tenant, last_event_id="3"):
        if not event_id:
            break
        again.append(int(event_id))
    assert again == []


async def test_a_revoked_token_ends_its_stream(client: PlatformClient) -> None:
    tenant = await client.tenant()
    listed = await client.http.get(f"/projects/{tenant.project_id}/tokens", headers=client.admin)
    (token,) = listed.json()["data"]
    revoked = False

    async def follow() -> None:
        nonlocal revoked
        async for event_id, _, _ in read_stream(client.http, tenant):
            if not event_id and not revoked:  # the stream is open and idle: revoke its token
                revoke = await client.http.delete(
                    f"/projects/{tenant.project_id}/tokens/{token['id']}", headers=client.admin
                )
                assert revoke.status_code == 200
                revoked = True

    await asyncio.wait_for(follow(), timeout=20)  # the server ends the stream by itself
    assert revoked
    again = await client.http.get("/events", params={"project_id": tenant.project_id}, headers=tenant.headers)
    assert again.status_code == 401
