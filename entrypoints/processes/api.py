"""The REST API process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from api.app import create_app
from api.data_keys import DataKeys
from api.platform import Platform
from entrypoints.bootstrap import bus, heartbeats, object_store
from entrypoints.control_plane import metadata, outbox, relay
from infra import tracing
from infra.address_guard import system_resolver
from infra.faults import NO_FAULTS, Faults
from infra.metadata.notifications import Waiters
from infra.object_store import ObjectStore
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.webhook_sender import WebhookSender, http_client
from readmodel.tables import OPERATION_ENDED_CHANNEL

MIN_ADMIN_TOKEN = 32


def api(settings: Settings, *, faults: Faults = NO_FAULTS, store: ObjectStore | None = None) -> FastAPI:
    """The REST API; its adapters open in the app's lifespan and close with it."""
    if settings.secret_key is None or not settings.host_public_key:
        raise SystemExit("PGPLANE_SECRET_KEY and PGPLANE_HOST_PUBLIC_KEY are required")
    commands = outbox(settings)
    if settings.admin_token is not None and len(settings.admin_token.get_secret_value()) < MIN_ADMIN_TOKEN:
        raise SystemExit(f"PGPLANE_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters")
    secret_key = settings.secret_key.get_secret_value()
    tracing.configure(settings, "api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = await stack.enter_async_context(metadata(settings))
            nc = await stack.enter_async_context(bus(settings))
            backups = store or object_store(settings)
            stack.push_async_callback(backups.close)
            outgoing = relay(settings, engine, nc)
            client = await stack.enter_async_context(http_client(settings))
            operation_ends = Waiters()
            app.state.platform = Platform(
                settings=settings,
                engine=engine,
                autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
                bus=nc,
                heartbeats=heartbeats(settings, nc),
                relay=outgoing,
                outbox=commands,
                box=SecretBox(secret_key),
                store=backups,
                data_keys=DataKeys(nc, commands.subjects, commands.signer),
                webhooks=WebhookSender(client, settings, system_resolver),
                operation_ends=operation_ends,
                faults=faults,
            )
            stop = asyncio.Event()
            relaying = asyncio.create_task(outgoing.run(stop))
            listening = asyncio.create_task(operation_ends.listen(engine, OPERATION_ENDED_CHANNEL, stop))
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(relaying, listening)

    return create_app(lifespan, max_body_bytes=settings.max_body_bytes)
