"""``pgplane ops``: bus and projector status, dead letters listed, shown, redriven and discarded,
stuck operations listed, retried and failed, each as an operator runs it (the command, against a
running platform)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import nats
import psycopg
from nats.js.errors import NotFoundError

from devstack.faults import InjectedFaults
from devstack.stack import Stack
from infra.topology import agent_consumer
from schemas.subjects import Subjects
from tests.platform_client import PlatformClient, Tenant
from tests.replay import replay_matches


def ops(stack: Stack, *args: str) -> Any:
    return pgplane(stack, "ops", *args)


def pgplane(stack: Stack, *args: str) -> Any:
    """An operator command's JSON answer (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=stack.env("operator"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_status_dead_letters_and_stuck_operations(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    done = await client.create_database(tenant, "fine")
    await client.succeeded(tenant, done["operation"]["id"])
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    await nc.jetstream().publish(f"{stack.namespace}.cmd.{stack.host_id}.database.create", b"{not json")
    await nc.close()
    again = await client.create_database(tenant, "after-poison")
    await client.succeeded(tenant, again["operation"]["id"])  # the poison went to the dead letters

    status = ops(stack, "status")
    assert status["dead_letters"] == 1
    assert status["consumers"][f"{subjects.commands_stream}/{subjects.agent_durable(stack.host_id)}"]["pending"] == 0
    assert f"{subjects.events_stream}/{subjects.projector_durable}" in status["consumers"]
    assert status["streams"][subjects.events_stream]["last_sequence"] >= status["projector"]["checkpoint"] > 0
    assert status["webhook_deliveries_pending"] == {"count": 0, "oldest_seconds": None}

    (letter,) = ops(stack, "dead-letters", "list")
    assert "unreadable" in letter["reason"] and letter["original_subject"].endswith("database.create")
    shown = ops(stack, "dead-letters", "show", str(letter["sequence"]))
    assert shown["body"] == "{not json"
    assert ops(stack, "dead-letters", "discard", str(letter["sequence"])) == {"discarded": letter["sequence"]}
    assert ops(stack, "dead-letters", "list") == []

    stack.stop_process("agent")
    waiting = await client.create_database(tenant, "waiting")
    stuck = ops(stack, "stuck", "--older-than", "0")
    assert [s["id"] for s in stuck] == [waiting["operation"]["id"]]
    assert ops(stack, "stuck") == []  # not stuck yet by the default hour
    assert ops(stack, "status", "--older-than", "0")["operations_stuck"] == 1
    stack.start_process("agent")
    await client.succeeded(tenant, waiting["operation"]["id"])


async def audit(client: PlatformClient, tenant: Tenant) -> list[dict[str, Any]]:
    response = await client.http.get("/audit-log", params={"project_id": tenant.project_id}, headers=tenant.headers)
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


def ops_refused(stack: Stack, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "ops", *args],
        env=stack.env("operator"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    return result.stderr


async def test_a_dead_letter_redriven_runs_once_as_a_new_operation(client: PlatformClient, stack: Stack) -> None:
    stack.stop_process("agent")
    stack.start_process("agent", faults=InjectedFaults(fail_at="create.database_created:transient"))
    tenant = await client.tenant()
    flaky = await client.create_database(tenant, "flaky")
    failed = await client.wait(tenant, flaky["operation"]["id"])
    assert failed["status"] == "failed" and "dead-lettered" in failed["error"]
    stack.stop_process("agent")
    stack.start_process("agent")  # the fault has passed
    nc = await nats.connect(**stack.nats())
    await nc.jetstream().publish(f"{stack.namespace}.cmd.{stack.host_id}.database.create", b"{not json")
    await nc.close()

    while len(letters := ops(stack, "dead-letters", "list")) < 2:
        await asyncio.sleep(0.2)
    (refused,) = [letter for letter in letters if "unreadable" in letter["reason"]]
    assert "never run" in ops_refused(stack, "dead-letters", "redrive", str(refused["sequence"]))
    (letter,) = [letter for letter in letters if letter["reason"].startswith("dead-lettered")]
    first = ops(stack, "dead-letters", "redrive", str(letter["sequence"]))
    assert first["created"] and first["retry_of"] == flaky["operation"]["id"]
    assert ops(stack, "dead-letters", "redrive", str(letter["sequence"])) == first | {"created": False}

    await client.succeeded(tenant, first["operation_id"])
    database = flaky["database"]
    assert client.host_has(database["dbname"], database["user"]) == (1, 1)
    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert [(d["id"], d["status"]) for d in listed["data"]] == [(database["id"], "available")]
    credentials = await client.credentials(tenant, database["id"])
    async with await psycopg.AsyncConnection.connect(credentials["uri"], connect_timeout=5) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    creates = [e for e in await audit(client, tenant) if e["action"] == "database.create"]
    (again,) = [e for e in creates if e["outcome"] == "requested" and e["detail"].get("retry_of")]
    assert again["detail"]["retry_of"] == flaky["operation"]["id"] and again["actor"].startswith("operator:")
    replay_matches(stack)


async def test_stuck_operations_are_retried_or_failed(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    stack.stop_process("agent")
    lost = await client.create_database(tenant, "lost")
    abandoned = await client.create_database(tenant, "abandoned")
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    while (await js.stream_info(subjects.commands_stream)).state.messages < 2:
        await asyncio.sleep(0.1)  # both commands reached the bus
    first = (await js.stream_info(subjects.commands_stream)).state.first_seq
    await js.delete_msg(subjects.commands_stream, first)  # the first command is lost
    await nc.close()

    failed = ops(stack, "stuck", "fail", abandoned["operation"]["id"], "--reason", "host retired")
    assert failed["commands_withdrawn"] == 1
    operation = await client.wait(tenant, abandoned["operation"]["id"])
    assert operation["status"] == "failed" and operation["error"] == "failed by an operator: host retired"
    assert "already ended failed" in ops_refused(stack, "stuck", "retry", abandoned["operation"]["id"])

    assert ops(stack, "stuck", "retry", lost["operation"]["id"]) == {
        "operation_id": lost["operation"]["id"],
        "retried": True,
    }
    stack.start_process("agent")
    await client.succeeded(tenant, lost["operation"]["id"])
    assert client.host_has(lost["database"]["dbname"], lost["database"]["user"]) == (1, 1)
    assert client.host_has(abandoned["database"]["dbname"], abandoned["database"]["user"]) == (0, 0)
    assert (await client.wait(tenant, abandoned["operation"]["id"]))["status"] == "failed"
    listed = (await client.http.get("/databases", headers=tenant.headers)).json()
    assert {d["name"]: d["status"] for d in listed["data"]} == {"lost": "available", "abandoned": "failed"}
    assert {"operation.retry", "operation.cancel"} <= {e["action"] for e in await audit(client, tenant)}
    replay_matches(stack)


async def test_a_command_out_of_deliveries_is_collected_and_redriven(client: PlatformClient, stack: Stack) -> None:
    """The server stops delivering a command after max_deliver (its MAX_DELIVERIES advisory): it
    joins the dead letters, and a redrive sends it again for the same operation."""
    subjects = Subjects(namespace=stack.namespace)
    settings = stack.settings("agent")
    durable = subjects.agent_durable(stack.host_id)
    stack.stop_process("agent")
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    quick = replace(agent_consumer(subjects, settings), max_deliver=1, ack_wait=0.5)
    await js.add_consumer(subjects.commands_stream, quick)
    tenant = await client.tenant()
    stalled = await client.create_database(tenant, "stalled")
    pull = await js.pull_subscribe_bind(durable=durable, stream=subjects.commands_stream)
    (delivery,) = await pull.fetch(1, timeout=10)  # delivered once, never answered
    with contextlib.suppress(nats.errors.TimeoutError):
        await pull.fetch(1, timeout=2)  # the server now gives up on it
    await js.add_consumer(subjects.commands_stream, agent_consumer(subjects, settings))
    await nc.close()

    (letter,) = ops(stack, "dead-letters", "list")
    assert "by the server after 1 deliveries" in letter["reason"]
    assert ops(stack, "status")["streams"][subjects.commands_stream]["messages"] == 0
    assert ops(stack, "dead-letters", "redrive", str(letter["sequence"])) == {
        "operation_id": stalled["operation"]["id"],
        "retried": True,
    }
    stack.start_process("agent")
    await client.succeeded(tenant, stalled["operation"]["id"])
    assert delivery.data and client.host_has(stalled["database"]["dbname"], stalled["database"]["user"]) == (1, 1)


async def test_events_a_checkpoint_skipped_are_projected_again(client: PlatformClient, stack: Stack) -> None:
    """The read model misses events a projector moved its checkpoint past without applying (the
    bug a crashed batch once caused): re-projecting from a sequence writes what they should have."""
    subjects = Subjects(namespace=stack.namespace)
    tenant = await client.tenant()
    stack.stop_process("projector")
    skipped = await client.create_database(tenant, "skipped")
    nc = await nats.connect(**stack.nats())
    js = nc.jetstream()
    while True:  # the agent's last event of the create is in the stream
        with contextlib.suppress(NotFoundError):
            created = await js.get_last_msg(subjects.events_stream, subjects.event("pgplane.database.created"))
            break
        await asyncio.sleep(0.2)
    await nc.close()
    last = created.seq or 0
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db), autocommit=True) as conn:
        row = conn.execute("SELECT last_sequence FROM projector_checkpoint WHERE name = 'live'").fetchone()
        assert row is not None
        checkpoint = int(row[0])
        conn.execute("UPDATE projector_checkpoint SET last_sequence = %s WHERE name = 'live'", (last,))
    stack.start_process("projector")
    await asyncio.sleep(1)
    waiting = await client.http.get(f"/operations/{skipped['operation']['id']}", headers=tenant.headers)
    assert waiting.json()["status"] == "accepted"  # its events were skipped

    assert pgplane(stack, "replay", "projection", "--from-sequence", str(checkpoint + 1)) == {
        "from_sequence": checkpoint + 1,
        "to_sequence": last,
        "events": last - checkpoint,
    }
    operation = await client.succeeded(tenant, skipped["operation"]["id"])
    assert [s["status"] for s in operation["steps"]] == ["completed"] * 5
    replay_matches(stack)
