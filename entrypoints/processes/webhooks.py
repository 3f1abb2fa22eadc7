"""The webhook dispatcher process."""

from __future__ import annotations

import asyncio

from consumers.webhooks.dispatcher import Dispatcher
from entrypoints.control_plane import metadata
from infra import metrics, tracing
from infra.address_guard import system_resolver
from infra.faults import NO_FAULTS, Faults
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.webhook_sender import WebhookSender, http_client


async def run_webhooks(settings: Settings, stop: asyncio.Event, *, faults: Faults = NO_FAULTS) -> None:
    """Public events → the projects' webhook endpoints (reads the metadata database only)."""
    if settings.secret_key is None:
        raise SystemExit("PGPLANE_SECRET_KEY is required (it decrypts the endpoints' secrets)")
    box = SecretBox(settings.secret_key.get_secret_value())
    metrics.serve(settings.metrics_port, settings.metrics_host)
    tracing.configure(settings, "webhooks")
    async with metadata(settings, pool_size=4) as engine, http_client(settings) as client:
        sender = WebhookSender(client, settings, system_resolver)
        await Dispatcher(engine, box, settings, sender, faults).run(stop)
