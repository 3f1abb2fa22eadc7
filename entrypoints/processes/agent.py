"""The data-host agent process."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from functools import partial

from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from psycopg_pool import AsyncConnectionPool

from consumers.agent import ledger_schema
from consumers.agent.base_backups import BaseBackups
from consumers.agent.graveyard import Graveyard
from consumers.agent.host import Host
from consumers.agent.host_state import StateReporter
from consumers.agent.key_service import KeyService
from consumers.agent.ledger import Ledger
from consumers.agent.service import Agent, BackgroundJob
from consumers.agent.wal_archiver import WalArchiver
from consumers.agent.warm_databases import WarmDatabases
from entrypoints.bootstrap import heartbeats, nats_credentials, object_store, required
from infra import metrics, tracing
from infra.faults import NO_FAULTS, Faults
from infra.host_postgres import HostPostgres
from infra.object_store import ObjectStore
from infra.pgbouncer import PgBouncer
from infra.settings import Settings
from infra.signing import CommandVerifier


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
            # each ledger call is one statement: autocommit saves a BEGIN and a COMMIT round trip
            AsyncConnectionPool(settings.ledger_dsn, min_size=1, max_size=size, open=False, kwargs={"autocommit": True})
        )
        async with ledger_pool.connection() as conn:
            await ledger_schema.check(conn)
        ledger = Ledger(ledger_pool)
        backups = store or object_store(settings)
        stack.push_async_callback(backups.close)
        bouncer = PgBouncer(
            directory=settings.pgbouncer_dir,
            port=settings.pgbouncer_port,
            admin_password=required(settings.pgbouncer_admin_password, "PGPLANE_PGBOUNCER_ADMIN_PASSWORD"),
            server_host=settings.host_pg_host,
            server_port=settings.host_pg_port,
        )
        stack.push_async_callback(bouncer.close)
        postgres = HostPostgres(admin_pool)
        warm = WarmDatabases(postgres, settings.agent_warm_databases)
        graveyard = Graveyard(postgres)
        host = Host(
            postgres=postgres,
            graveyard=graveyard,
            bouncer=bouncer,
            ledger=ledger,
            bouncer_host="127.0.0.1",
            bouncer_port=settings.pgbouncer_port,
            private_key=required(settings.host_private_key, "PGPLANE_HOST_PRIVATE_KEY"),
            admin_dsn=settings.host_admin_dsn,
            store=backups,
            backup_keys=settings.keys(),
            work_dir=settings.agent_work_dir.resolve(),
            deadline_seconds=settings.backup_deadline_seconds,
            dump_compression=settings.backup_compression_level,
            host_id=settings.host_id,
            wal_spool=settings.wal_spool_dir,
            faults=faults,
            warm_databases=warm,
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
        await agent.serve(stop, [beating, reporting, warm.run, graveyard.run, *_pitr_jobs(settings, host, agent)])


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
