"""What a saga acts on: this data host's PostgreSQL and PgBouncer, the agent's ledger, the object
store and its keys, a work directory, and the fault hooks."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from consumers.agent.graveyard import Graveyard
from consumers.agent.ledger import Ledger
from consumers.agent.warm_databases import WarmDatabases
from infra.backup_crypto import BackupKeys
from infra.errors import PermanentError
from infra.faults import NO_FAULTS, Faults
from infra.host_postgres import HostPostgres, check_login
from infra.object_store import ObjectStore
from infra.pgbouncer import PgBouncer
from infra.secrets import unseal
from schemas.commands import (
    NewDatabaseCommand,
    RotateCredentials,
)


@dataclass(frozen=True, kw_only=True)
class Host:
    """What a saga acts on: this host's PostgreSQL (and the job that drops what deletes set aside),
    its PgBouncer, the agent's ledger, the object store and backup keys, and a work directory for
    downloads."""

    postgres: HostPostgres
    graveyard: Graveyard
    bouncer: PgBouncer
    ledger: Ledger
    bouncer_host: str
    bouncer_port: int
    private_key: str
    admin_dsn: str
    store: ObjectStore
    backup_keys: BackupKeys
    work_dir: Path
    deadline_seconds: float
    host_id: str = "host-1"
    wal_spool: Path | None = None
    faults: Faults = NO_FAULTS
    login_attempts: int = 5
    dump_compression: int | None = None
    """pg_dump's compression level for backups (``None``: pg_dump's default)."""
    warm_databases: WarmDatabases | None = None
    """Databases made ahead for creates (``None``: each create makes its own)."""

    async def reroute(self) -> None:
        """PgBouncer routes every database as the ledger says."""
        await self.bouncer.apply(self.ledger.routes)

    async def reroute_database(self, database_id: uuid.UUID, dbname: str) -> None:
        """PgBouncer routes one database as the ledger says, the others as before."""
        await self.bouncer.apply_one(dbname, lambda: self.ledger.route(database_id))

    async def lock_down(self) -> None:
        """The host's tenant boundary in place, for tenant roles made by earlier releases too."""
        await self.postgres.lock_down()
        for route in await self.ledger.routes():
            await self.postgres.confine(route.role)

    async def verify_login(self, command: NewDatabaseCommand | RotateCredentials) -> None:
        password = unseal(command.sealed_password, private_key_b64=self.private_key, context=str(command.database_id))
        for attempt in range(self.login_attempts):
            try:
                await check_login(
                    host=self.bouncer_host,
                    port=self.bouncer_port,
                    dbname=command.dbname,
                    user=command.role,
                    password=password,
                )
                return
            except psycopg.OperationalError as exc:
                error = exc
                await asyncio.sleep(0.2 * (attempt + 1))
        raise PermanentError("the new credentials do not log in through the connection pooler", detail=error)
