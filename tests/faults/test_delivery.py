"""At-least-once delivery: duplicates, poison messages, dead letters, a crash after accept."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import nats
import psycopg

from devstack.faults import CRASH_EXIT_CODE, InjectedFaults
from devstack.stack import Stack
from schemas.envelope import Envelope
from schemas.events import DatabaseCreated
from schemas.subjects import Subjects
from tests.platform_client import PlatformClient, new_key
from tests.replay import replay_matches


def outbox_command(stack: Stack, operation_id: str) -> tuple[str, bytes]:
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        row = conn.execute("SELECT subject, payload FROM outbox WHERE msg_id = %s", (f"{operation_id}:1",)).fetchone()
    assert row is not None
    return row[0], bytes(row[1])


async def test_same_command_five_times_has_one_effect(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "dup")
    await client.succeeded(tenant, accepted["operation"]["id"])
    subject, payload = outbox_command(stack, accepted["operation"]["id"])
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    for i in range(4):  # distinct Nats-Msg-Ids defeat the server's dedupe: the agent must cope
        await js.publish(subject, payload, headers={"Nats-Msg-Id": f"again-{i}"})
    await nc.close()
    await asyncio.sleep(2)
    database = accepted["database"]
    assert client.host_has(database["dbname"], database["user"]) == (1, 1)
    operation = await client.succeeded(tenant, accepted["operation"]["id"])
    assert len(operation["steps"]) == 5
    replay_matches(stack)


async def test_poison_message_is_dead_lettered_without_blocking(client: PlatformClient, stack: Stack) -> None:
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    await js.publish(f"{stack.namespace}.cmd.{stack.host_id}.database.create", b"{not json")
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "healthy")
    await client.succeeded(tenant, accepted["operation"]["id"])
    dead = await js.get_last_msg(subjects.dead_letter_stream, subjects.dead_letter(stack.host_id))
    assert dead.data == b"{not json"
    assert dead.headers is not None and "unreadable" in dead.headers["Pgplane-Reason"]
    await nc.close()


async def test_retries_exhausted_dead_letter_and_fail(client: PlatformClient, stack: Stack) -> None:
    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(fail_at="create.database_created:transient"))
    tenant = await client.tenant()
    doomed = await client.create_database(tenant, "doomed")
    operation = await client.wait(tenant, doomed["operation"]["id"])
    assert operation["status"] == "failed"
    assert "dead-lettered after 3 attempts" in operation["error"]
    database = doomed["database"]
    assert client.host_has(database["dbname"], database["user"]) == (0, 0)  # the role was undone
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    dead = await nc.jetstream().get_last_msg(subjects.dead_letter_stream, subjects.dead_letter(stack.host_id))
    assert Envelope.model_validate_json(dead.data or b"").correlation_id.hex == doomed["operation"]["id"].replace(
        "-", ""
    )
    await nc.close()
    stack.stop_process("agent")
    stack.start_process("agent")  # other commands keep flowing
    fine = await client.create_database(tenant, "fine")
    await client.succeeded(tenant, fine["operation"]["id"])
    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert {d["name"]: d["status"] for d in listed["data"]} == {"doomed": "failed", "fine": "available"}
    replay_matches(stack)


async def test_crash_between_accept_and_publish(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    stack.stop_process("api")
    stack.start_process("api", faults=InjectedFaults(crash_at="api.accepted"))
    key = new_key()
    body = {"project_id": tenant.project_id, "name": "survivor"}
    with contextlib.suppress(httpx.HTTPError):  # the API dies before answering
        await client.http.post("/databases", json=body, headers=tenant.headers | {"Idempotency-Key": key})
    assert stack.procs["api"].wait(timeout=30) == CRASH_EXIT_CODE
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        pending = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert pending == (2,)  # accepted and committed, not yet on the bus
    stack.start_process("api")
    retry = await client.http.post("/databases", json=body, headers=tenant.headers | {"Idempotency-Key": key})
    assert retry.status_code == 202
    await client.succeeded(tenant, retry.json()["operation"]["id"])
    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert listed["count"] == 1


async def test_a_batch_a_dead_projector_held_is_not_skipped(client: PlatformClient, stack: Stack) -> None:
    """The durable gives a dead projector's batch back only after its ack wait, behind newer
    events: the projector reads the held events from the stream before it moves past them."""
    tenant = await client.tenant()
    stack.stop_process("projector")
    first = await client.create_database(tenant, "held")
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    held = await nc.jetstream().pull_subscribe_bind(durable=subjects.projector_durable, stream=subjects.events_stream)
    taken: list[str] = []
    while subjects.event(DatabaseCreated.TYPE) not in taken:  # a projector that takes every event of
        taken += [msg.subject for msg in await held.fetch(1, timeout=10)]  # the first create, then dies
    await nc.close()
    second = await client.create_database(tenant, "after")
    stack.start_process("projector")
    await client.succeeded(tenant, second["operation"]["id"])
    await client.succeeded(tenant, first["operation"]["id"])
    replay_matches(stack)
