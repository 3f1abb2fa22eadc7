"""What the data host actually holds, and putting back what pgplane gave a database.

At start and every ``state_report_seconds`` the agent reports its host's tenant databases
(owner, size), tenant roles, the databases PgBouncer routes, the roles whose password is not the
one its ledger holds, and the WAL position (``HostStateReported``). The reconciler compares the
report with the read model and, for what is safe to repair, sends ``RepairDatabase``: the agent
then sets back the role, the password or the route from its ledger, under the database's lane
(never while a saga runs on it), and reports each repair (``DriftRepaired``). Nothing here drops
or empties anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

from consumers.agent.host import Host
from consumers.agent.wal_archiver import Publish, host_event
from schemas.commands import DriftKind, RepairDatabase, drift_object
from schemas.envelope import Envelope
from schemas.events import DriftRepaired, HostDatabase, HostStateReported

log = logging.getLogger("pgplane.host_state")


class StateReporter:
    def __init__(self, host: Host, publish: Publish) -> None:
        self.host = host
        self.publish = publish

    async def run(self, stop: asyncio.Event, *, interval: float) -> None:
        while not stop.is_set():
            try:
                await self.report()
            except Exception:
                log.warning("reporting the host's state failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def report(self) -> HostStateReported:
        host, postgres = self.host, self.host.postgres
        reported_at = datetime.now(UTC)
        routes = await host.ledger.routes()
        roles = await postgres.tenant_roles()
        state = HostStateReported(
            host_id=host.host_id,
            report_id=uuid.uuid4(),
            reported_at=reported_at,
            wal_lsn=await postgres.wal_lsn(),
            databases=[
                HostDatabase(dbname=name, owner=owner, size_bytes=size)
                for name, owner, size in await postgres.tenant_databases()
            ],
            roles=sorted(roles),
            routes=await host.bouncer.routed(),
            verifier_mismatch=sorted(
                r.role for r in routes if r.role in roles and roles[r.role] not in (None, r.verifier)
            ),
        )
        await self.publish(host_event(state, host_id=host.host_id, key=f"state:{state.report_id}"))
        return state


async def repair(host: Host, command: Envelope, cmd: RepairDatabase, publish: Publish) -> list[DriftKind]:
    """Put back what the ledger says the database has; returns what needed it (and was repaired:
    each repair is reported once, however often it is asked for)."""
    route = next((r for r in await host.ledger.routes() if r.database_id == cmd.database_id), None)
    if route is None:
        log.info("no repair for database %s: this host does not serve it (any more)", cmd.database_id)
        return []
    postgres = host.postgres
    done: list[DriftKind] = []
    for kind in cmd.repairs:
        if kind is DriftKind.ROLE_MISSING:
            if await postgres.role_exists(route.role):
                continue  # put back already (the reconciler asks for every report showing it)
            await postgres.ensure_role(
                route.role,
                verifier=route.verifier,
                connection_limit=route.max_connections,
                login=not await host.ledger.is_suspended(route.database_id),
            )
        elif kind is DriftKind.OWNER_CHANGED:
            if await postgres.database_owner(route.dbname) in (None, route.role):
                continue
            await postgres.set_owner(route.dbname, route.role)
            await postgres.revoke_public(route.dbname, owner=route.role)
        elif kind is DriftKind.VERIFIER_CHANGED:
            if await postgres.verifier(route.role) in (None, route.verifier):
                continue
            await postgres.set_password(route.role, verifier=route.verifier)
        elif kind is DriftKind.ROUTE_MISSING:
            if route.dbname in await host.bouncer.routed():
                continue
            await host.reroute()
        else:
            continue  # reported for an operator, never repaired here
        done.append(kind)
        repaired = DriftRepaired(
            host_id=host.host_id,
            kind=kind,
            object=drift_object(kind, dbname=route.dbname, role=route.role),
            database_id=route.database_id,
        )
        await publish(
            Envelope.wrap(
                repaired,
                correlation_id=uuid.uuid5(command.id, kind.value),
                sequence=0,
                actor=f"agent:{host.host_id}",
                project_id=command.project_id,
                causation_id=command.id,
            )
        )
    return done
