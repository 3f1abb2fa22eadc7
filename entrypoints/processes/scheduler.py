"""The scheduler process."""

from __future__ import annotations

import asyncio

from entrypoints.bootstrap import bus
from entrypoints.control_plane import metadata, outbox, relay
from infra import metrics, tracing
from infra.settings import Settings
from infra.stripe_api import stripe_client
from producers.reconciler import Reconciler
from producers.scheduler import BackupScheduler
from producers.suspensions import Suspensions
from producers.usage_meter import UsageMeter


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Backup slots, missed-slot reports and retention, and reconciling the data hosts' reports with
    the read model, published through the outbox; usage to Stripe once billing is configured."""
    metrics.serve(settings.metrics_port, settings.metrics_host)
    tracing.configure(settings, "scheduler")
    async with metadata(settings, pool_size=3) as engine, bus(settings) as nc:
        commands, outgoing = outbox(settings), relay(settings, engine, nc)
        jobs = [
            BackupScheduler(engine, settings, commands).run(stop, outgoing),
            Reconciler(engine, commands, interval=settings.reconcile_seconds).run(stop, outgoing),
            Suspensions(engine, commands, interval=settings.scheduler_interval_seconds).run(stop, outgoing),
        ]
        billing = stripe_client(settings)
        if billing is not None:
            jobs.append(UsageMeter(engine, settings, billing).run(stop))
        await asyncio.gather(*jobs)
