"""The FastAPI application and its lifespan (engine, NATS, outbox relay)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import nats
from fastapi import FastAPI

from api.deps import Platform
from api.errors import install_error_handlers
from api.routes import audit, backups, databases, health, operations, point_in_time, projects
from infra.metadata.engine import create_schema, make_engine
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.topology import ensure_topology
from producers.commands import OutboxRelay


def create_app(settings: Settings) -> FastAPI:
    if settings.secret_key is None or not settings.host_public_key:
        raise SystemExit("PGPLANE_SECRET_KEY and PGPLANE_HOST_PUBLIC_KEY are required")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.metadata_dsn)
        async with engine.begin() as conn:
            await create_schema(conn)
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        await ensure_topology(js, settings)
        relay = OutboxRelay(engine, js, idempotency_ttl=timedelta(hours=settings.idempotency_ttl_hours))
        secret_key = settings.secret_key
        assert secret_key is not None
        store = settings.open_store()
        app.state.platform = Platform(
            settings=settings,
            engine=engine,
            relay=relay,
            box=SecretBox(secret_key.get_secret_value()),
            store=store,
            backup_keys=settings.keys(),
        )
        stop = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(stop))
        try:
            yield
        finally:
            stop.set()
            await relay_task
            await nc.drain()
            await store.close()
            await engine.dispose()

    app = FastAPI(
        title="pgplane", version="1.0.0", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    install_error_handlers(app)
    for module in (projects, databases, backups, point_in_time, operations, audit):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(health.router)
    return app
