"""Webhooks end to end: a real receiver on loopback verifies every delivery with the Standard
Webhooks library, sees each event once after dedupe by webhook-id and each database's events in
order, survives failed first attempts and a dispatcher killed mid-delivery; 410 disables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from devstack.faults import InjectedFaults
from devstack.stack import Stack
from tests.e2e.test_ops import ops
from tests.platform_client import PlatformClient, Tenant
from tests.stacks import WITHOUT_SCHEDULER, shared_stack
from tests.webhook_receiver import Received, Receiver, webhook_receiver

stack = shared_stack(  # with the dispatcher; each test has its own tenant and receiver
    {
        "PGPLANE_WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["0.3"] * 40),  # retries for 12 s, then gives up
        "PGPLANE_WEBHOOK_POLL_SECONDS": "0.1",
        "PGPLANE_WEBHOOK_TIMEOUT_SECONDS": "2",
    },
    processes=(*WITHOUT_SCHEDULER, "webhooks"),
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


async def register(client: PlatformClient, tenant: Tenant, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.http.post(
        "/webhooks", json={"project_id": tenant.project_id, "url": url, **fields}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def created(client: PlatformClient, tenant: Tenant, name: str) -> str:
    accepted = await client.create_database(tenant, name)
    await client.succeeded(tenant, accepted["operation"]["id"])
    database_id: str = accepted["database"]["id"]
    return database_id


async def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def fail_first(times: int) -> Callable[[Received], int]:
    """Each event's first ``times`` attempts get a 503."""
    seen: dict[str, int] = {}

    def answer(request: Received) -> int:
        webhook_id = request.headers["webhook-id"]
        seen[webhook_id] = seen.get(webhook_id, 0) + 1
        return 503 if seen[webhook_id] <= times else 204

    return answer


async def test_deliveries_are_signed_ordered_once_each_and_survive_failures(
    client: PlatformClient, receiver: Receiver
) -> None:
    tenant = await client.tenant()
    endpoint = await register(client, tenant, receiver.url)
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    receiver.answer = fail_first(2)
    first = await created(client, tenant, "one")
    rotate = await client.http.post(f"/databases/{first}/rotate-credentials", headers=tenant.headers)
    await client.succeeded(tenant, rotate.json()["operation"]["id"])
    second = await created(client, tenant, "two")

    await until(lambda: len(receiver.delivered()) == 3, "three events delivered")
    verifier = Webhook(endpoint["secret"])
    events = [verifier.verify(r.body, r.headers) for r in receiver.delivered()]
    assert all(r.headers["webhook-id"] == e["id"] for r, e in zip(receiver.delivered(), events, strict=True))
    by_database: dict[str, list[tuple[int, str]]] = {}
    for event in events:
        by_database.setdefault(event["data"]["database_id"], []).append((event["sequence"], event["type"]))
    assert by_database == {
        first: [(1, "database.created"), (2, "database.credentials_rotated")],
        second: [(3, "database.created")],
    }
    for event in events:  # every event: two 503s, then one 204 under the same webhook-id
        assert receiver.attempts(event["id"]) == [503, 503, 204]

    attempts = await client.http.get(f"/webhooks/{endpoint['id']}/deliveries", headers=tenant.headers)
    assert attempts.status_code == 200
    statuses = sorted(a["status_code"] for a in attempts.json()["data"])
    assert statuses == [204] * 3 + [503] * 6
    assert "secret" not in (await client.http.get(f"/webhooks/{endpoint['id']}", headers=tenant.headers)).json()


async def test_a_failing_event_holds_back_only_its_own_database(client: PlatformClient, receiver: Receiver) -> None:
    tenant = await client.tenant()
    endpoint = await register(client, tenant, receiver.url)
    first_seen: list[str] = []

    def answer(request: Received) -> int:  # the first database heard of keeps failing
        database_id = json.loads(request.body)["data"]["database_id"]
        first_seen.append(database_id)
        return 500 if database_id == first_seen[0] else 204

    receiver.answer = answer
    stuck = await created(client, tenant, "stuck")
    await until(lambda: bool(receiver.requests), "the first attempt")
    moving = await created(client, tenant, "moving")
    rotate = await client.http.post(f"/databases/{stuck}/rotate-credentials", headers=tenant.headers)
    await client.succeeded(tenant, rotate.json()["operation"]["id"])
    await until(lambda: len(receiver.delivered()) == 1, "the other database's event")
    assert json.loads(receiver.delivered()[0].body)["data"]["database_id"] == moving
    await asyncio.sleep(1)
    stuck_ids = {
        json.loads(r.body)["id"] for r in receiver.requests if json.loads(r.body)["data"]["database_id"] == stuck
    }
    assert len(stuck_ids) == 1  # the rotation waits behind the failing create
    assert first_seen[0] == stuck
    receiver.answer = lambda r: 204
    await until(lambda: len(receiver.delivered()) == 3, "the held-back events, once the receiver recovers")
    kinds = [
        json.loads(r.body)["type"] for r in receiver.delivered() if json.loads(r.body)["data"]["database_id"] == stuck
    ]
    assert kinds in (["database.created", "database.credentials_rotated"],)
    assert endpoint["status"] == "enabled"


async def test_a_410_disables_the_endpoint(client: PlatformClient, receiver: Receiver) -> None:
    tenant = await client.tenant()
    endpoint = await register(client, tenant, receiver.url)
    receiver.answer = lambda r: 410
    await created(client, tenant, "gone")

    async def status() -> dict[str, Any]:
        body: dict[str, Any] = (await client.http.get(f"/webhooks/{endpoint['id']}", headers=tenant.headers)).json()
        return body

    deadline = time.monotonic() + 30
    while (current := await status())["status"] != "disabled":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert "410" in current["disabled_reason"]
    deadline = time.monotonic() + 30
    while not (
        announced := (
            await client.http.get(
                "/events",
                params={"project_id": tenant.project_id, "type": "webhook.endpoint_disabled"},
                headers=tenant.headers,
            )
        ).json()["data"]
    ):
        assert time.monotonic() < deadline, "no webhook.endpoint_disabled event"
        await asyncio.sleep(0.1)
    assert [e["data"] for e in announced] == [
        {"project_id": tenant.project_id, "endpoint_id": endpoint["id"], "reason": current["disabled_reason"]}
    ]
    await created(client, tenant, "after")
    await asyncio.sleep(1)
    assert len(receiver.requests) == 1  # nothing more goes to a disabled endpoint


async def test_a_dispatcher_killed_mid_delivery_sends_again_under_the_same_id(
    client: PlatformClient, stack: Stack, receiver: Receiver
) -> None:
    tenant = await client.tenant()
    stack.stop_process("webhooks")
    stack.start_process("webhooks", faults=InjectedFaults(crash_at="webhooks.sent"))
    endpoint = await register(client, tenant, receiver.url)
    await created(client, tenant, "crash")
    await until(lambda: bool(receiver.requests), "the delivery the dispatcher dies after")
    crashed = stack.procs["webhooks"]
    await until(lambda: crashed.poll() is not None, "the dispatcher to die")
    stack.start_process("webhooks")
    await until(lambda: len(receiver.requests) == 2, "the delivery again, once its lease ran out", timeout=30)
    first, again = receiver.requests
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert first.body == again.body
    Webhook(endpoint["secret"]).verify(again.body, again.headers)
    await asyncio.sleep(1)
    assert len(receiver.delivered()) == 1


async def test_endpoints_and_events_stay_with_their_project(client: PlatformClient, receiver: Receiver) -> None:
    alice, bob = await client.tenant("alice"), await client.tenant("bob")
    with webhook_receiver() as bobs:
        theirs = await register(client, bob, bobs.url)
        mine = await register(client, alice, receiver.url)
        for method, path in [
            ("GET", f"/webhooks/{mine['id']}"),
            ("PATCH", f"/webhooks/{mine['id']}"),
            ("DELETE", f"/webhooks/{mine['id']}"),
            ("POST", f"/webhooks/{mine['id']}/rotate-secret"),
            ("GET", f"/webhooks/{mine['id']}/deliveries"),
        ]:
            response = await client.http.request(
                method, path, headers=bob.headers, json={} if method == "PATCH" else None
            )
            assert response.status_code == 404, (method, path, response.text)
        listed = await client.http.get("/webhooks", params={"project_id": alice.project_id}, headers=bob.headers)
        assert listed.status_code == 404
        refused = await client.http.post(
            "/webhooks", json={"project_id": alice.project_id, "url": bobs.url}, headers=bob.headers
        )
        assert refused.status_code == 404
        await created(client, alice, "private")
        await until(lambda: len(receiver.delivered()) == 1, "alice's event at alice's endpoint")
        await asyncio.sleep(1)
        assert bobs.requests == [] and theirs["project_id"] == bob.project_id


async def test_private_and_metadata_addresses_are_refused(client: PlatformClient) -> None:
    tenant = await client.tenant()
    for url in (
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "ftp://x/",
    ):
        response = await client.http.post(
            "/webhooks", json={"project_id": tenant.project_id, "url": url}, headers=tenant.headers
        )
        assert response.status_code == 422, (url, response.text)
    listed = await client.http.get("/webhooks", params={"project_id": tenant.project_id}, headers=tenant.headers)
    assert listed.json()["count"] == 0


async def test_replay_resends_under_the_same_id_and_a_test_event_is_signed_with_both_secrets(
    client: PlatformClient, receiver: Receiver, stack: Stack
) -> None:
    tenant, other = await client.tenant("alice"), await client.tenant("bob")
    endpoint = await register(client, tenant, receiver.url)
    await created(client, tenant, "replayed")
    await until(lambda: len(receiver.requests) == 1, "the first delivery")
    event = json.loads(receiver.requests[0].body)

    one = await client.http.post(
        f"/webhooks/{endpoint['id']}/replay", json={"event_id": event["id"]}, headers=tenant.headers
    )
    assert one.status_code == 200 and one.json() == {"queued": 1}, one.text
    await until(lambda: len(receiver.requests) == 2, "the replayed event")
    ranged = await client.http.post(
        f"/webhooks/{endpoint['id']}/replay", json={"since": "2026-01-01T00:00:00Z"}, headers=tenant.headers
    )
    assert ranged.json() == {"queued": 1}
    await until(lambda: len(receiver.requests) == 3, "the event replayed by time")
    numbered = await client.http.post(f"/webhooks/{endpoint['id']}/replay", json={"after": 0}, headers=tenant.headers)
    assert numbered.json() == {"queued": 1}
    assert ops(stack, "webhook-replay", endpoint["id"], "--after", "0") == {"queued": 1}  # as an operator
    await until(lambda: len(receiver.requests) == 5, "the event replayed by number")
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event["id"]}
    assert len({r.body for r in receiver.requests}) == 1
    both = {"after": 0, "since": "2026-01-01T00:00:00Z"}
    refused = await client.http.post(f"/webhooks/{endpoint['id']}/replay", json=both, headers=tenant.headers)
    assert refused.status_code == 422
    theirs = await client.http.post(
        f"/webhooks/{endpoint['id']}/replay", json={"event_id": event["id"]}, headers=other.headers
    )
    assert theirs.status_code == 404

    rotated = await client.http.post(f"/webhooks/{endpoint['id']}/rotate-secret", headers=tenant.headers)
    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
    sent = await client.http.post(f"/webhooks/{endpoint['id']}/test", headers=tenant.headers)
    assert sent.status_code == 200 and sent.json()["status_code"] == 204, sent.text
    test = receiver.requests[-1]
    for secret in (endpoint["secret"], rotated.json()["secret"]):  # the overlap: either verifies
        assert Webhook(secret).verify(test.body, test.headers)["type"] == "webhook.test"
    attempts = (await client.http.get(f"/webhooks/{endpoint['id']}/deliveries", headers=tenant.headers)).json()
    assert attempts["data"][0]["event_id"] == sent.json()["event_id"]
