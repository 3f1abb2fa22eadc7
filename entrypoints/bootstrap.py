"""The composition root's shared adapters every process may use: the bus connection, the object
store and heartbeats (the control plane's own, the metadata database and the command outbox, are
in ``entrypoints.control_plane``: the data-host agent never loads them). Each process wires them
in ``entrypoints.processes`` (importing only what it runs), operator actions in
``entrypoints.operator``. Defaults are production; tests pass fakes or a fault injector as keyword
overrides. No other module opens a connection of its own or creates a schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from infra.errors import Unreachable
from infra.heartbeats import Heartbeats
from infra.object_store import ObjectStore, open_store
from infra.settings import Settings
from schemas.subjects import Subjects


def object_store(settings: Settings) -> ObjectStore:
    return open_store(settings.store_url(), s3=settings.s3_options())


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


def heartbeats(settings: Settings, nc: NATS) -> Heartbeats:
    return Heartbeats(nc.jetstream(), Subjects(namespace=settings.namespace))


def required(value: Any, name: str) -> str:
    if value is None:
        raise SystemExit(f"{name} is required")
    return str(value.get_secret_value())
