"""The projector process."""

from __future__ import annotations

import asyncio

from consumers.projector.service import Projector, StreamReader
from entrypoints.bootstrap import bus, heartbeats
from entrypoints.control_plane import metadata
from infra import metrics, tracing
from infra.batch_pull import BatchPull
from infra.settings import Settings
from schemas.subjects import Subjects


async def run_projector(settings: Settings, stop: asyncio.Event) -> None:
    """Events → the read model and the audit log."""
    metrics.serve(settings.metrics_port, settings.metrics_host)
    tracing.configure(settings, "projector")
    subjects = Subjects(namespace=settings.namespace)
    async with metadata(settings, pool_size=2) as engine, bus(settings) as nc:
        js = nc.jetstream()
        pull = await BatchPull(nc, subjects.events_stream, subjects.projector_durable).start()
        reader = StreamReader(js, subjects.events_stream, subjects.all_events())
        beating = heartbeats(settings, nc).run("projector", stop)
        await asyncio.gather(Projector(engine, pull, reader).run(stop), beating)
