"""Whoever reaches the bus cannot make an agent act: an unsigned or tampered command for another
tenant's database changes nothing, goes to the dead letters, and shows in the platform's audit log
as ``command.rejected``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import nats
import psycopg
import pytest
from nats.errors import Error as NatsError

from devstack.stack import Stack
from schemas.commands import DeleteDatabase
from schemas.envelope import Envelope
from schemas.events import PLATFORM_PROJECT
from schemas.subjects import Subjects
from tests.platform_client import PlatformClient
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own


def outbox_payload(stack: Stack, operation_id: str) -> tuple[str, bytes]:
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        row = conn.execute("SELECT subject, payload FROM outbox WHERE msg_id = %s", (f"{operation_id}:1",)).fetchone()
    assert row is not None
    return row[0], bytes(row[1])


async def rejected(client: PlatformClient, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        audit = await client.http.get(f"/audit-log?project_id={PLATFORM_PROJECT}", headers=client.admin)
        found = [e for e in audit.json()["data"] if e["action"] == "command.rejected"]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, audit.text
        await asyncio.sleep(0.2)


async def test_forged_and_tampered_commands_change_nothing(client: PlatformClient, stack: Stack) -> None:
    victim, attacker = await client.tenant("victim"), await client.tenant("attacker")
    target = await client.create_database(victim, "precious")
    await client.succeeded(victim, target["operation"]["id"])
    mine = await client.create_database(attacker, "mine")
    await client.succeeded(attacker, mine["operation"]["id"])
    database = target["database"]
    subjects = Subjects(namespace=stack.namespace)

    forged = Envelope.wrap(
        DeleteDatabase(database_id=uuid.UUID(database["id"]), dbname=database["dbname"], role=database["user"]),
        correlation_id=uuid.uuid4(),
        sequence=1,
        actor="token:attacker",
        project_id=uuid.UUID(victim.project_id),
    )
    rotate = await client.http.post(f"/databases/{mine['database']['id']}/rotate-credentials", headers=attacker.headers)
    await client.succeeded(attacker, rotate.json()["operation"]["id"])
    subject, signed = outbox_payload(stack, rotate.json()["operation"]["id"])
    tampered = json.loads(signed)
    tampered["data"] |= {"database_id": database["id"], "dbname": database["dbname"], "role": database["user"]}

    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    await js.publish(subjects.command(stack.host_id, DeleteDatabase.KIND), forged.model_dump_json().encode())
    await js.publish(subject, json.dumps(tampered).encode())
    found = await rejected(client, 2)
    dead = await js.get_last_msg(subjects.dead_letter_stream, subjects.dead_letter(stack.host_id))
    await nc.close()

    reasons = {str(e["detail"]["reason"]) for e in found}  # type: ignore[index]
    assert "the command is not signed" in reasons
    assert any("does not match" in reason for reason in reasons)
    assert dead.headers is not None and "sign" in dead.headers["Pgplane-Reason"]
    assert client.host_has(database["dbname"], database["user"]) == (1, 1)
    shown = await client.http.get(f"/databases/{database['id']}", headers=victim.headers)
    assert shown.json()["status"] == "available"
    metrics = await client.http.get(f"{stack.api_url}/metrics", headers=client.admin)
    assert "pgplane_commands_rejected 2.0" in metrics.text
    credentials = await client.credentials(victim, database["id"])
    with psycopg.connect(credentials["uri"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # and its password did not change


async def test_the_bus_refuses_strangers_and_keeps_roles_to_their_subjects(stack: Stack) -> None:
    subjects = Subjects(namespace=stack.namespace)
    command_subject = subjects.command(stack.host_id, DeleteDatabase.KIND)
    with pytest.raises(Exception, match=r"Authorization Violation|no servers"):  # no credentials at all
        await nats.connect(stack.cluster.nats_url, max_reconnect_attempts=1, allow_reconnect=False)
    operator = await nats.connect(**stack.nats())
    before = (await operator.jetstream().stream_info(subjects.commands_stream)).state.last_seq
    errors: dict[str, list[Exception]] = {"agent": [], "projector": []}
    for role, seen in errors.items():
        user = stack.nats_user(role)

        async def collect(error: Exception, seen: list[Exception] = seen) -> None:
            seen.append(error)

        nc = await nats.connect(
            stack.cluster.nats_url,
            user=user["PGPLANE_NATS_USER"],
            password=user["PGPLANE_NATS_PASSWORD"],
            inbox_prefix=f"_INBOX.{user['PGPLANE_NATS_USER']}",
            error_cb=collect,
        )
        with pytest.raises(NatsError):  # the server drops it: no acknowledgement comes back
            await nc.jetstream().publish(command_subject, b"{}", timeout=1)
        await nc.close()
        assert any("permissions violation for publish" in str(e) for e in seen), (role, seen)
    assert (await operator.jetstream().stream_info(subjects.commands_stream)).state.last_seq == before
    await operator.close()
