"""``pgplane ops``: bus and projector status, dead letters listed, shown and discarded, stuck
operations, each as an operator runs it (the command, against a running platform)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import nats

from devstack.stack import Stack
from schemas.subjects import Subjects
from tests.platform_client import PlatformClient


def ops(stack: Stack, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "ops", *args],
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
