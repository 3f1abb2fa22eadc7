"""Tracing end to end: every process writes its spans as JSON lines, and one create request is one
trace, from the API's request span through the agent's command and steps, the projector and the
webhook delivery, whose request carries the delivery span's ``traceparent``; a replay rebuilds the
public events with their trace context."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.cluster import Cluster
from devstack.stack import Stack
from tests.platform_client import PlatformClient
from tests.replay import replay_matches
from tests.stacks import WITHOUT_SCHEDULER, new_stack
from tests.webhook_receiver import Receiver, webhook_receiver

Span = dict[str, Any]
SERVICES = ("api", "agent", "projector", "webhooks")


@pytest.fixture(scope="module")
def spans_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces") / "spans.jsonl"


@pytest.fixture(scope="module")
def stack(cluster: Cluster, spans_path: Path) -> Iterator[Stack]:
    """One platform, with the dispatcher, each process exporting its spans to its own file."""
    env = {"PGPLANE_TRACE_EXPORTER": f"jsonl:{spans_path}", "PGPLANE_WEBHOOK_POLL_SECONDS": "0.1"}
    platform = new_stack(cluster, env, processes=(*WITHOUT_SCHEDULER, "webhooks"))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def spans_of(spans_path: Path, service: str) -> list[Span]:
    path = spans_path.with_name(f"{spans_path.stem}.{service}{spans_path.suffix}")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until_spans(spans_path: Path, service: str, name: str, trace_id: str) -> list[Span]:
    """The spans called ``name`` that ``service`` has written in the trace (waits for the first)."""
    deadline = time.monotonic() + 60
    while True:
        found = [s for s in spans_of(spans_path, service) if s["name"] == name and s["trace_id"] == trace_id]
        if found:
            return found
        assert time.monotonic() < deadline, f"no {name!r} span from the {service} in trace {trace_id}"
        await asyncio.sleep(0.1)


async def test_one_create_request_is_one_trace_across_every_process(
    client: PlatformClient, receiver: Receiver, spans_path: Path, stack: Stack
) -> None:
    tenant = await client.tenant()
    registered = await client.http.post(
        "/webhooks",
        json={"project_id": tenant.project_id, "url": receiver.url, "event_types": ["database.created"]},
        headers=tenant.headers,
    )
    assert registered.status_code == 201, registered.text
    response = await client.http.post(
        "/databases", json={"project_id": tenant.project_id, "name": "traced"}, headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    await client.succeeded(tenant, response.json()["operation"]["id"])

    request_id = response.headers["x-request-id"]
    (request,) = [s for s in spans_of(spans_path, "api") if s["attributes"].get("pgplane.request_id") == request_id]
    assert request["name"] == "POST /api/v1/databases" and request["kind"] == "server"
    assert request["parent_id"] is None and request["service"] == "pgplane-api"
    assert request["attributes"]["http.response.status_code"] == 202
    trace_id = request["trace_id"]

    (handle,) = await until_spans(spans_path, "agent", "handle pgplane.command.create_database", trace_id)
    assert handle["parent_id"] == request["span_id"] and handle["kind"] == "consumer"
    steps = [s for s in spans_of(spans_path, "agent") if s["trace_id"] == trace_id and s["name"].startswith("step ")]
    assert len(steps) >= 5 and all(s["parent_id"] == handle["span_id"] for s in steps)

    await until_spans(spans_path, "projector", "project pgplane.database.created", trace_id)
    made_by = {request["span_id"], handle["span_id"]} | {s["span_id"] for s in steps}
    projected = [s for s in spans_of(spans_path, "projector") if s["trace_id"] == trace_id]
    assert {s["name"] for s in projected} >= {"project pgplane.operation.requested", "project pgplane.database.created"}
    assert all(s["parent_id"] in made_by for s in projected)

    (delivery,) = await until_spans(spans_path, "webhooks", "deliver webhook", trace_id)
    assert delivery["parent_id"] == handle["span_id"]  # database.created was recorded by the command's span
    assert delivery["attributes"]["http.response.status_code"] == 204
    (delivered,) = receiver.delivered()
    assert json.loads(delivered.body)["type"] == "database.created"
    assert delivered.headers["traceparent"].startswith(f"00-{trace_id}-{delivery['span_id']}-")
    assert {s["service"] for s in (request, handle, *projected, delivery)} == {f"pgplane-{s}" for s in SERVICES}
    replay_matches(stack)  # the events table's trace context comes from the events alone
