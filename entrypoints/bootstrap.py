"""The composition root's shared adapters: the metadata engine, the bus connection, the object
store, heartbeats and the command outbox. Each process wires them in ``entrypoints.processes``
(importing only what it runs), operator actions in ``entrypoints.operator``. Defaults are
production; tests pass fakes or a fault injector as keyword overrides. No other module opens a
connection of its own or creates a schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import nats
import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.errors import Unreachable
from infra.heartbeats import Heartbeats
from infra.metadata import migrate
from infra.metadata.engine import make_engine, where
from infra.object_store import ObjectStore, open_store
from infra.settings import Settings
from infra.signing import CommandSigner
from producers.commands import Outbox, OutboxRelay
from schemas.subjects import Subjects


def object_store(settings: Settings) -> ObjectStore:
    return open_store(settings.store_url(), s3=settings.s3_options())


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


def nats_credentials(settings: Settings) -> dict[str, Any]:
    """The process's NATS user and its own inbox prefix (replies to others stay unreadable to it)."""
    if settings.nats_user is None:
        return {}
    password = settings.nats_password.get_secret_value() if settings.nats_password else None
    return {"user": settings.nats_user, "password": password, "inbox_prefix": f"_INBOX.{settings.nats_user}"}


@asynccontextmanager
async def bus(settings: Settings, *, fail_fast: bool = False) -> AsyncIterator[NATS]:
    """A NATS connection as this process's user. A service rides out NATS restarts by reconnecting
    for as long as it takes; an operator command (``fail_fast``) gives up in seconds. Streams and
    consumers are made by ``pgplane migrate bus`` (``setup_bus``), never by a service."""
    try:
        nc = await nats.connect(
            settings.nats_url,
            connect_timeout=2,
            max_reconnect_attempts=1 if fail_fast else -1,
            reconnect_time_wait=1 if fail_fast else 2,
            **nats_credentials(settings),
        )
    except (OSError, TimeoutError, NoServersError) as exc:
        raise Unreachable(f"NATS at {settings.nats_url}: {exc or type(exc).__name__}") from exc
    try:
        yield nc
    finally:
        await nc.close()


def outbox(settings: Settings) -> Outbox:
    """Where commands and events wait to be published; commands are signed on the way in."""
    key = required(settings.command_signing_key, "PGPLANE_COMMAND_SIGNING_KEY")
    return Outbox(Subjects(namespace=settings.namespace), CommandSigner(key))


def relay(settings: Settings, engine: AsyncEngine, nc: NATS) -> OutboxRelay:
    return OutboxRelay(engine, nc.jetstream(), idempotency_ttl=timedelta(hours=settings.idempotency_ttl_hours))


def heartbeats(settings: Settings, nc: NATS) -> Heartbeats:
    return Heartbeats(nc.jetstream(), Subjects(namespace=settings.namespace))


async def check_metadata(settings: Settings) -> None:
    async with metadata(settings, pool_size=1):
        pass


def required(value: Any, name: str) -> str:
    if value is None:
        raise SystemExit(f"{name} is required")
    return str(value.get_secret_value())
