"""The control plane's adapters: the metadata database, at the schema revision this release
needs, and the command outbox with its relay to the bus. The API, the projector, the scheduler,
the webhook dispatcher and operator commands use them; the data-host agent does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import sqlalchemy as sa
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.bootstrap import required
from infra.errors import Unreachable
from infra.metadata import migrate
from infra.metadata.engine import make_engine, where
from infra.settings import Settings
from infra.signing import CommandSigner
from producers.commands import Outbox, OutboxRelay
from schemas.subjects import Subjects


@asynccontextmanager
async def metadata(settings: Settings, *, pool_size: int = 10) -> AsyncIterator[AsyncEngine]:
    """The metadata database, at the schema revision this release needs."""
    engine = make_engine(settings.metadata_dsn, pool_size=pool_size)
    try:
        try:
            async with engine.connect() as conn:
                await migrate.check(conn)
        except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
            raise Unreachable(f"the metadata database at {where(settings.metadata_dsn)}: {exc}") from exc
        yield engine
    finally:
        await engine.dispose()


async def check_metadata(settings: Settings) -> None:
    async with metadata(settings, pool_size=1):
        pass


def outbox(settings: Settings) -> Outbox:
    """Where commands and events wait to be published; commands are signed on the way in."""
    key = required(settings.command_signing_key, "PGPLANE_COMMAND_SIGNING_KEY")
    return Outbox(Subjects(namespace=settings.namespace), CommandSigner(key))


def relay(settings: Settings, engine: AsyncEngine, nc: NATS) -> OutboxRelay:
    return OutboxRelay(engine, nc.jetstream(), idempotency_ttl=timedelta(hours=settings.idempotency_ttl_hours))
