"""The webhook dispatcher's queueing: every enabled endpoint's new events become pending
deliveries (its event types only), its position moves past what it read, and a wake-up costs the
same statements with two endpoints or twenty."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.webhooks.dispatcher import Dispatcher
from infra.metadata.engine import make_engine
from infra.metadata.tables import WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.webhook_sender import WebhookSender
from readmodel.tables import EVENTS

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def engine(metadata_dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(metadata_dsn, pool_size=1)
    async with engine.begin() as conn:
        for table in (WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS, EVENTS):
            await conn.execute(sa.delete(table))
    yield engine
    await engine.dispose()


async def resolve_nothing(host: str, port: int) -> list[str]:
    raise AssertionError("queueing sends nothing")


def dispatcher(engine: AsyncEngine) -> Dispatcher:
    settings = Settings.model_validate({})
    sender = WebhookSender(httpx.AsyncClient(), settings, resolve_nothing)  # never used: nothing is sent
    return Dispatcher(engine, SecretBox(base64.b64encode(bytes(32)).decode()), settings, sender)


async def project_with_events(engine: AsyncEngine, types: list[str]) -> uuid.UUID:
    project_id = uuid.uuid4()
    rows = [
        {
            "project_id": project_id,
            "sequence": sequence,
            "id": uuid.uuid4(),
            "type": kind,
            "subject": f"databases/{sequence}",
            "time": NOW,
            "data": {"database_id": str(uuid.uuid4())},
        }
        for sequence, kind in enumerate(types, 1)
    ]
    async with engine.begin() as conn:
        await conn.execute(sa.insert(EVENTS), rows)
    return project_id


async def endpoint(
    engine: AsyncEngine,
    project_id: uuid.UUID,
    *,
    types: list[str] | None = None,
    status: str = "enabled",
    after: int = 0,
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    row: dict[str, Any] = {
        "id": endpoint_id,
        "project_id": project_id,
        "url": "https://hooks.example.com/in",
        "event_types": types or [],
        "status": status,
        "secret_encrypted": b"x",
        "last_sequence": after,
        "created_at": NOW,
        "updated_at": NOW,
    }
    async with engine.begin() as conn:
        await conn.execute(sa.insert(WEBHOOK_ENDPOINTS), row)
    return endpoint_id


async def queued(engine: AsyncEngine) -> dict[uuid.UUID, list[int]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(WEBHOOK_DELIVERIES).order_by(WEBHOOK_DELIVERIES.c.sequence))).all()
    found: dict[uuid.UUID, list[int]] = {}
    for row in rows:
        found.setdefault(row.endpoint_id, []).append(row.sequence)
    return found


async def positions(engine: AsyncEngine) -> dict[uuid.UUID, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(WEBHOOK_ENDPOINTS.c.id, WEBHOOK_ENDPOINTS.c.last_sequence))).all()
    return {row.id: row.last_sequence for row in rows}


async def test_each_enabled_endpoint_gets_its_projects_new_events_of_its_types(engine: AsyncEngine) -> None:
    kinds = ["database.created", "operation.succeeded", "database.deleted"]
    first, second = await project_with_events(engine, kinds), await project_with_events(engine, kinds)
    every = await endpoint(engine, first)
    typed = await endpoint(engine, first, types=["database.deleted"])
    later = await endpoint(engine, second, after=1)
    disabled = await endpoint(engine, second, status="disabled")

    assert await dispatcher(engine).queue() == 3 + 1 + 2
    assert await queued(engine) == {every: [1, 2, 3], typed: [3], later: [2, 3]}
    assert await positions(engine) == {every: 3, typed: 3, later: 3, disabled: 0}
    assert await dispatcher(engine).queue() == 0  # nothing new: nothing again


async def test_a_wake_up_costs_the_same_statements_for_two_endpoints_or_twenty(engine: AsyncEngine) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    spent = []
    for endpoints in (2, 20):
        for _ in range(endpoints):
            await endpoint(engine, await project_with_events(engine, ["database.created", "database.deleted"]))
        statements.clear()
        assert await dispatcher(engine).queue() == 2 * endpoints
        spent.append(len(statements))
        statements.clear()
        assert await dispatcher(engine).queue() == 0
        spent.append(len(statements))
    assert spent[0] == spent[2] and spent[1] == spent[3], spent
