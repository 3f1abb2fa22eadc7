"""The composition root: the one place that builds adapters (metadata engine, bus connection,
object store, data-host pools) and wires them into a process. Defaults are production; tests
pass fakes or a fault injector as keyword overrides. No other module opens a connection of its
own or creates a schema.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import nats
import psycopg
import sqlalchemy as sa
from fastapi import FastAPI
from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.data_keys import DataKeys
from api.platform import Platform
from consumers.agent import ledger_schema
from consumers.agent.base_backups import BaseBackups
from consumers.agent.host import Host
from consumers.agent.host_state import StateReporter
from consumers.agent.key_service import KeyService
from consumers.agent.ledger import Ledger
from consumers.agent.service import Agent, BackgroundJob
from consumers.agent.wal_archiver import WalArchiver
from consumers.projector.replay import ReplayReport, Reprojected, replay_projection
from consumers.projector.replay import reproject as reproject_events
from consumers.projector.service import Projector, StreamReader
from consumers.webhooks.dispatcher import Dispatcher
from entrypoints.ops import Ops
from infra import metrics, tracing
from infra.address_guard import system_resolver
from infra.errors import Unreachable
from infra.faults import NO_FAULTS, Faults
from infra.heartbeats import Heartbeats
from infra.host_postgres import HostPostgres
from infra.metadata import migrate
from infra.metadata.engine import make_engine, where
from infra.object_store import ObjectStore, open_store
from infra.pgbouncer import PgBouncer
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.signing import CommandSigner, CommandVerifier
from infra.stripe_api import stripe_client
from infra.topology import ensure_topology
from infra.webhook_sender import WebhookSender, http_client
from producers.commands import Outbox, OutboxRelay
from producers.reconciler import Reconciler
from producers.scheduler import BackupScheduler
from producers.suspensions import Suspensions
from producers.usage_meter import UsageMeter
from schemas.subjects import Subjects

MIN_ADMIN_TOKEN = 32


T = TypeVar("T")


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


async def setup_bus(settings: Settings) -> list[str]:
    """Create or update every stream and durable consumer (the operator role); returns their names."""
    async with bus(settings, fail_fast=True) as nc:
        return await ensure_topology(nc.jetstream(), settings)


def outbox(settings: Settings) -> Outbox:
    """Where commands and events wait to be published; commands are signed on the way in."""
    key = _required(settings.command_signing_key, "PGPLANE_COMMAND_SIGNING_KEY")
    return Outbox(Subjects(namespace=settings.namespace), CommandSigner(key))


def relay(settings: Settings, engine: AsyncEngine, nc: NATS) -> OutboxRelay:
    return OutboxRelay(engine, nc.jetstream(), idempotency_ttl=timedelta(hours=settings.idempotency_ttl_hours))


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
            app.state.platform = Platform(
                settings=settings,
                engine=engine,
                bus=nc,
                heartbeats=heartbeats(settings, nc),
                relay=outgoing,
                outbox=commands,
                box=SecretBox(secret_key),
                store=backups,
                data_keys=DataKeys(nc, commands.subjects, commands.signer),
                webhooks=WebhookSender(client, settings, system_resolver),
                faults=faults,
            )
            stop = asyncio.Event()
            relaying = asyncio.create_task(outgoing.run(stop))
            try:
                yield
            finally:
                stop.set()
                await relaying

    return create_app(lifespan, max_body_bytes=settings.max_body_bytes)


async def run_agent(
    settings: Settings, stop: asyncio.Event, *, faults: Faults = NO_FAULTS, store: ObjectStore | None = None
) -> None:
    """The data-host agent: this host's commands, plus WAL archiving and base backups when the
    host's PostgreSQL archives into a spool."""
    size = settings.agent_concurrency + 2
    if not settings.command_verify_keys:
        raise SystemExit("PGPLANE_COMMAND_VERIFY_KEYS is required")
    verifier = CommandVerifier(settings.command_verify_keys)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    tracing.configure(settings, "agent")
    async with AsyncExitStack() as stack:
        admin_pool = await stack.enter_async_context(
            AsyncConnectionPool(settings.host_admin_dsn, min_size=1, max_size=size, open=False)
        )
        ledger_pool = await stack.enter_async_context(
            AsyncConnectionPool(settings.ledger_dsn, min_size=1, max_size=size, open=False)
        )
        async with ledger_pool.connection() as conn:
            await ledger_schema.check(conn)
        ledger = Ledger(ledger_pool)
        backups = store or object_store(settings)
        stack.push_async_callback(backups.close)
        host = Host(
            postgres=HostPostgres(admin_pool),
            bouncer=PgBouncer(
                directory=settings.pgbouncer_dir,
                port=settings.pgbouncer_port,
                admin_password=_required(settings.pgbouncer_admin_password, "PGPLANE_PGBOUNCER_ADMIN_PASSWORD"),
                server_host=settings.host_pg_host,
                server_port=settings.host_pg_port,
            ),
            ledger=ledger,
            bouncer_host="127.0.0.1",
            bouncer_port=settings.pgbouncer_port,
            private_key=_required(settings.host_private_key, "PGPLANE_HOST_PRIVATE_KEY"),
            admin_dsn=settings.host_admin_dsn,
            store=backups,
            backup_keys=settings.keys(),
            work_dir=settings.agent_work_dir.resolve(),
            deadline_seconds=settings.backup_deadline_seconds,
            dump_compression=settings.backup_compression_level,
            host_id=settings.host_id,
            wal_spool=settings.wal_spool_dir,
            faults=faults,
        )
        credentials = nats_credentials(settings)
        login = credentials and SASLPlaintext(username=credentials["user"], password=credentials["password"])
        broker = NatsBroker(
            settings.nats_url,
            security=login or None,
            inbox_prefix=credentials.get("inbox_prefix", "_INBOX"),
            max_reconnect_attempts=-1,
        )
        nc = await broker.connect()
        agent = Agent(
            settings=settings,
            broker=broker,
            host=host,
            verifier=verifier,
            key_service=KeyService(host.backup_keys, verifier),
            inbox=credentials.get("inbox_prefix", "_INBOX"),
            faults=faults,
        )
        beating = partial(heartbeats(settings, nc).run, f"agent.{settings.host_id}")
        reporting = partial(StateReporter(host, agent.publish_event).run, interval=settings.state_report_seconds)
        await agent.serve(stop, [beating, reporting, *_pitr_jobs(settings, host, agent)])


def heartbeats(settings: Settings, nc: NATS) -> Heartbeats:
    return Heartbeats(nc.jetstream(), Subjects(namespace=settings.namespace))


def _pitr_jobs(settings: Settings, host: Host, agent: Agent) -> list[BackgroundJob]:
    """WAL archiving and base backups, when this host's PostgreSQL archives into a spool."""
    if settings.wal_spool_dir is None:
        return []
    jobs: list[WalArchiver | BaseBackups] = [
        WalArchiver(
            spool=settings.wal_spool_dir,
            host_id=settings.host_id,
            store=host.store,
            keys=host.backup_keys,
            ledger=host.ledger,
            publish=agent.publish_event,
            lag_alert_seconds=settings.wal_lag_alert_seconds,
        ),
        BaseBackups(
            host_id=settings.host_id,
            admin_dsn=settings.host_admin_dsn,
            postgres=host.postgres,
            store=host.store,
            keys=host.backup_keys,
            ledger=host.ledger,
            publish=agent.publish_event,
            interval_seconds=settings.base_backup_interval_seconds,
            retention_days=settings.wal_retention_days,
            compression_level=settings.backup_compression_level,
        ),
    ]
    return [job.run for job in jobs]


async def run_projector(settings: Settings, stop: asyncio.Event) -> None:
    """Events → the read model and the audit log."""
    metrics.serve(settings.metrics_port, settings.metrics_host)
    tracing.configure(settings, "projector")
    subjects = Subjects(namespace=settings.namespace)
    async with metadata(settings, pool_size=2) as engine, bus(settings) as nc:
        js = nc.jetstream()
        subscription = await js.pull_subscribe_bind(durable=subjects.projector_durable, stream=subjects.events_stream)
        reader = StreamReader(js, subjects.events_stream, subjects.all_events())
        beating = heartbeats(settings, nc).run("projector", stop)
        await asyncio.gather(Projector(engine, subscription, reader).run(stop), beating)


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


def migrate_metadata(settings: Settings) -> str:
    """Bring the metadata database to this release's schema; returns the revision it was at."""
    try:
        return migrate.upgrade(settings.metadata_dsn)
    except sa.exc.OperationalError as exc:
        raise Unreachable(f"the metadata database at {where(settings.metadata_dsn)}: {exc.orig}") from exc


async def migrate_ledger(settings: Settings) -> tuple[int, int]:
    """Bring this data host's ledger to this release's schema; returns the versions before and after."""
    try:
        connection = await psycopg.AsyncConnection.connect(settings.ledger_dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"the agent ledger at {where(settings.ledger_dsn)}: {exc}") from exc
    async with connection as conn:
        return await ledger_schema.migrate(conn)


async def check_metadata(settings: Settings) -> None:
    async with metadata(settings, pool_size=1):
        pass


async def replay(settings: Settings, *, keep: bool = False) -> ReplayReport:
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        return await replay_projection(engine, nc.jetstream(), Subjects(namespace=settings.namespace), keep=keep)


async def reproject(settings: Settings, *, from_sequence: int | None, since: datetime | None) -> Reprojected:
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        subjects = Subjects(namespace=settings.namespace)
        return await reproject_events(engine, nc.jetstream(), subjects, from_sequence=from_sequence, since=since)


async def ops(settings: Settings, action: Callable[[Ops], Awaitable[T]]) -> T:
    """Run an operator action with the metadata database and the bus (as the operator user)."""
    signing = outbox(settings) if settings.command_signing_key is not None else None
    actor = f"operator:{getpass.getuser()}"
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        return await action(Ops(engine, nc.jetstream(), Subjects(namespace=settings.namespace), actor, signing))


def _required(value: Any, name: str) -> str:
    if value is None:
        raise SystemExit(f"{name} is required")
    return str(value.get_secret_value())
