"""Observability: Prometheus metrics per process (the agent's commands and saga step durations,
the projector's events, the dispatcher's deliveries, the API's requests, scraped as Prometheus
would) and JSON logs that carry the operation."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack
from infra.processes import free_port
from tests.platform_client import PlatformClient
from tests.stacks import WITHOUT_SCHEDULER
from tests.webhook_receiver import webhook_receiver


@pytest.fixture
def stack_processes() -> tuple[str, ...]:
    return (*WITHOUT_SCHEDULER, "webhooks")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(
    url: str, headers: dict[str, str] | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url, headers=headers)
    assert response.status_code == 200
    return samples(response.text)


async def test_each_process_counts_what_it_does(client: PlatformClient, stack: Stack) -> None:
    ports = {}
    for name in ("agent", "projector", "webhooks"):
        ports[name] = free_port()
        stack.stop_process(name)
        stack.start_process(name, {"PGPLANE_METRICS_PORT": str(ports[name])})
    tenant = await client.tenant()
    with webhook_receiver() as receiver:
        hook = await client.http.post(
            "/webhooks", json={"project_id": tenant.project_id, "url": receiver.url}, headers=tenant.headers
        )
        assert hook.status_code == 201
        accepted = await client.create_database(tenant, "counted")
        await client.succeeded(tenant, accepted["operation"]["id"])
        deadline = time.monotonic() + 30
        while not receiver.delivered():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    logged = [json.loads(line) for line in stack.log_path("agent").read_text().splitlines() if line.startswith("{")]
    assert {"operation_id": accepted["operation"]["id"], "level": "info"}.items() <= next(
        entry for entry in logged if entry["message"].startswith("command create")
    ).items()  # JSON logs carry the operation

    agent = await scrape(f"http://127.0.0.1:{ports['agent']}/metrics")
    assert agent[("pgplane_agent_commands_total", frozenset({("kind", "create"), ("outcome", "done")}))] == 1
    step = frozenset({("kind", "create"), ("step", "role_created"), ("outcome", "ok")})
    assert agent[("pgplane_saga_step_seconds_count", step)] == 1
    projector = await scrape(f"http://127.0.0.1:{ports['projector']}/metrics")
    assert projector[("pgplane_projector_events_total", frozenset())] >= 8
    assert ("pgplane_consumer_pending", frozenset({("consumer", "projector")})) in projector
    webhooks = await scrape(f"http://127.0.0.1:{ports['webhooks']}/metrics")
    assert webhooks[("pgplane_webhook_deliveries_total", frozenset({("outcome", "delivered")}))] == 1
    api = await scrape(f"{stack.api_url}/metrics", client.admin)  # it spans tenants: admin only
    assert api[("pgplane_webhook_deliveries_pending", frozenset())] == 0
    assert api[("pgplane_dead_letters", frozenset())] == 0
    created = frozenset({("method", "POST"), ("route", "/api/v1/databases"), ("status", "202")})
    assert api[("pgplane_http_requests_total", created)] == 1
