"""The steps of each command, in order, with the undo of each. Every step checks reality first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from consumers.agent.ledger import Ledger
from infra.backup_crypto import BackupKeys
from infra.errors import PermanentError
from infra.faults import NO_FAULTS, Faults
from infra.host_postgres import HostPostgres, check_login
from infra.object_store import ObjectStore
from infra.pgbouncer import PgBouncer
from infra.secrets import unseal
from schemas.commands import (
    CreateDatabase,
    DatabaseCommand,
    DeleteDatabase,
    NewDatabaseCommand,
    ResetDatabase,
    RotateCredentials,
)

Action = Callable[[], Awaitable[None]]
Outputs = dict[str, str | int]


@dataclass(frozen=True)
class Step:
    """``do`` may return outputs: recorded with the step, they end up in the success event."""

    name: str
    do: Callable[[], Awaitable[Outputs | None]]
    undo: Action | None = None


@dataclass(frozen=True, kw_only=True)
class Host:
    """What a saga acts on: this host's PostgreSQL, its PgBouncer, the agent's ledger, the object
    store and backup keys, and a work directory for downloads."""

    postgres: HostPostgres
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

    async def reroute(self) -> None:
        await self.bouncer.apply(await self.ledger.routes())

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
        raise PermanentError(f"login through PgBouncer failed: {error}")


def create_steps(host: Host, cmd: NewDatabaseCommand) -> list[Step]:
    async def create_role() -> None:
        await host.ledger.remember_database(
            cmd.database_id, dbname=cmd.dbname, role=cmd.role, max_connections=cmd.connection_limit
        )
        await host.postgres.ensure_role(cmd.role, verifier=cmd.password_verifier, connection_limit=cmd.connection_limit)

    async def add_route() -> None:
        await host.ledger.set_verifier(cmd.database_id, cmd.password_verifier)
        await host.ledger.set_route(cmd.database_id, routed=True)
        await host.reroute()

    async def verify_login() -> None:
        await host.verify_login(cmd)

    return [
        Step("role_created", create_role, lambda: host.postgres.drop_role(cmd.role)),
        Step(
            "database_created",
            lambda: host.postgres.ensure_database(cmd.dbname, owner=cmd.role),
            lambda: host.postgres.drop_database(cmd.dbname),
        ),
        Step("public_revoked", lambda: host.postgres.revoke_public(cmd.dbname, owner=cmd.role)),
        Step("route_added", add_route, lambda: _unroute(host, cmd)),
        Step("login_verified", verify_login),
    ]


def delete_steps(host: Host, cmd: DeleteDatabase) -> list[Step]:
    async def tombstone() -> None:
        await host.ledger.remember_database(cmd.database_id, dbname=cmd.dbname, role=cmd.role, max_connections=1)
        await host.ledger.set_deleted(cmd.database_id, True)

    async def restore_route() -> None:
        await host.ledger.set_route(cmd.database_id, routed=True)
        await host.reroute()

    return [
        Step("tombstoned", tombstone, lambda: host.ledger.set_deleted(cmd.database_id, False)),
        Step("route_removed", lambda: _unroute(host, cmd), restore_route),
        Step("database_dropped", lambda: host.postgres.drop_database(cmd.dbname)),
        Step("role_dropped", lambda: host.postgres.drop_role(cmd.role)),
    ]


def reset_steps(host: Host, cmd: ResetDatabase) -> list[Step]:
    return [
        Step("database_dropped", lambda: host.postgres.drop_database(cmd.dbname)),
        Step("database_created", lambda: host.postgres.ensure_database(cmd.dbname, owner=cmd.role)),
        Step("public_revoked", lambda: host.postgres.revoke_public(cmd.dbname, owner=cmd.role)),
        Step("connections_reset", lambda: host.bouncer.disconnect(cmd.dbname)),
    ]


def rotate_steps(host: Host, cmd: RotateCredentials) -> list[Step]:
    async def update_route() -> None:
        await host.ledger.set_verifier(cmd.database_id, cmd.password_verifier)
        await host.reroute()

    async def restore_route() -> None:
        await host.ledger.restore_previous_verifier(cmd.database_id)
        await host.reroute()

    async def restore_password() -> None:
        previous = await host.ledger.restore_previous_verifier(cmd.database_id)
        if previous is not None:
            await host.postgres.set_password(cmd.role, verifier=previous)

    async def verify_login() -> None:
        await host.verify_login(cmd)

    return [
        Step(
            "password_set",
            lambda: host.postgres.set_password(cmd.role, verifier=cmd.password_verifier),
            restore_password,
        ),
        Step("route_updated", update_route, restore_route),
        Step("login_verified", verify_login),
    ]


async def _unroute(host: Host, cmd: DatabaseCommand) -> None:
    await host.ledger.set_route(cmd.database_id, routed=False)
    await host.reroute()
    await host.bouncer.disconnect(cmd.dbname)


def steps_for(host: Host, cmd: DatabaseCommand) -> list[Step]:
    match cmd:
        case CreateDatabase():
            return create_steps(host, cmd)
        case DeleteDatabase():
            return delete_steps(host, cmd)
        case ResetDatabase():
            return reset_steps(host, cmd)
        case RotateCredentials():
            return rotate_steps(host, cmd)
    raise PermanentError(f"no saga for {type(cmd).__name__}")
