"""The steps that make, change and remove a tenant database: its role, the database, its PgBouncer
route and the login check. Every step checks reality first, so running it twice does nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime

from consumers.agent.host import Host
from consumers.agent.saga import StepOutput
from schemas.commands import DatabaseCommand, DeleteDatabase, NewDatabaseCommand, RotateCredentials


class WritesEnded(StepOutput):
    writes_ended_at: AwareDatetime
    """The route was gone and every session ended: nothing wrote to the database after this."""


class TenantDatabase:
    """One tenant database on this host, named by the command."""

    def __init__(self, host: Host, cmd: DatabaseCommand) -> None:
        self.host = host
        self.cmd = cmd

    async def create_database(self) -> None:
        """A warm database taken when one is left (``consumers.agent.warm_databases``), else made."""
        warm = self.host.warm_databases
        if warm is None or not await warm.take(self.cmd.dbname, owner=self.cmd.role):
            await self.host.postgres.ensure_database(self.cmd.dbname, owner=self.cmd.role)

    async def drop_database(self) -> None:
        """Out of reach at once, dropped in the background (``consumers.agent.graveyard``)."""
        await self.host.graveyard.set_aside_database(self.cmd.dbname)

    async def revoke_public(self) -> None:
        await self.host.postgres.revoke_public(self.cmd.dbname, owner=self.cmd.role)

    async def drop_role(self) -> None:
        """No more logins at once, dropped in the background after the databases."""
        await self.host.graveyard.set_aside_role(self.cmd.role)

    async def reroute(self) -> None:
        await self.host.reroute_database(self.cmd.database_id, self.cmd.dbname)

    async def remove_route(self) -> None:
        """PgBouncer stops routing the database and drops its sessions."""
        await self.host.ledger.set_route(self.cmd.database_id, routed=False)
        await self.reroute()
        await self.host.bouncer.disconnect(self.cmd.dbname)

    async def restore_route(self) -> None:
        await self.host.ledger.set_route(self.cmd.database_id, routed=True)
        await self.reroute()

    async def reset_connections(self) -> None:
        await self.host.bouncer.disconnect(self.cmd.dbname)

    async def refuse_logins(self) -> None:
        """Recorded first: a role the reconciler has to make again is made without login too."""
        await self.host.ledger.set_suspended(self.cmd.database_id, True)
        await self.host.postgres.set_login(self.cmd.role, allowed=False)

    async def allow_logins(self) -> None:
        await self.host.postgres.set_login(self.cmd.role, allowed=True)
        await self.host.ledger.set_suspended(self.cmd.database_id, False)

    async def end_sessions(self) -> None:
        """Every session of the database's role ends, in PostgreSQL and in PgBouncer (whose pool
        forgets its failed logins too, so a resumed database is reachable at once)."""
        await self.host.postgres.end_sessions(self.cmd.role)
        await self.host.bouncer.disconnect(self.cmd.dbname)


class NewTenantDatabase(TenantDatabase):
    """A database made by a create or by a restore into a new database."""

    cmd: NewDatabaseCommand

    def __init__(self, host: Host, cmd: NewDatabaseCommand) -> None:
        super().__init__(host, cmd)
        self.cmd = cmd

    async def create_role(self) -> None:
        cmd = self.cmd
        await self.host.ledger.remember_database(
            cmd.database_id, dbname=cmd.dbname, role=cmd.role, max_connections=cmd.connection_limit
        )
        await self.host.postgres.ensure_role(
            cmd.role, verifier=cmd.password_verifier, connection_limit=cmd.connection_limit
        )

    async def add_route(self) -> None:
        await self.host.ledger.set_verifier(self.cmd.database_id, self.cmd.password_verifier, route=True)
        await self.reroute()

    async def verify_login(self) -> None:
        await self.host.verify_login(self.cmd)


class DeletedTenantDatabase(TenantDatabase):
    """A database being deleted: first a tombstone, so a stale create cannot bring it back."""

    def __init__(self, host: Host, cmd: DeleteDatabase) -> None:
        super().__init__(host, cmd)

    async def tombstone(self) -> None:
        cmd = self.cmd
        await self.host.ledger.tombstone(cmd.database_id, dbname=cmd.dbname, role=cmd.role)

    async def remove_tombstone(self) -> None:
        await self.host.ledger.clear_tombstone(self.cmd.database_id)

    async def end_writes(self) -> WritesEnded:
        await self.remove_route()
        return WritesEnded(writes_ended_at=datetime.now(UTC))


class RotatedTenantDatabase(TenantDatabase):
    """A new password: PostgreSQL first, then PgBouncer's copy of the verifier, then a real login.

    Undone in reverse, each undo reads the verifier that is live in the ledger: once the route's
    undo has put the previous one back (or when the route was never updated), the password's undo
    sets exactly that one, whatever happened in earlier rotations.
    """

    cmd: RotateCredentials

    def __init__(self, host: Host, cmd: RotateCredentials) -> None:
        super().__init__(host, cmd)
        self.cmd = cmd

    async def set_password(self) -> None:
        await self.host.postgres.set_password(self.cmd.role, verifier=self.cmd.password_verifier)

    async def restore_password(self) -> None:
        live = await self.host.ledger.verifier(self.cmd.database_id)
        if live is not None:
            await self.host.postgres.set_password(self.cmd.role, verifier=live)

    async def update_route(self) -> None:
        await self.host.ledger.set_verifier(self.cmd.database_id, self.cmd.password_verifier)
        await self.reroute()

    async def restore_previous_route(self) -> None:
        await self.host.ledger.restore_previous_verifier(self.cmd.database_id, replaced=self.cmd.password_verifier)
        await self.reroute()

    async def verify_login(self) -> None:
        await self.host.verify_login(self.cmd)
