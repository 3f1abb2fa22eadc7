"""The reconciler: each data host's state report (``HostStateReported``, kept in ``host_states``)
compared with the read model.

For every database the read model says is available (or suspended) on the host, the report must show the
database, its role (owning it), its PgBouncer route and pgplane's password; every tenant-named database and
role on the host must belong to a database pgplane serves. Each difference is a drift, reported
once while it lasts (``DriftDetected``) and closed when a later report no longer shows it
(``DriftResolved``). What is safe to put back (a role, a password, an owner, a route: what pgplane gave,
with no tenant data involved) is sent to the host as ``RepairDatabase``, again for every report
that still shows it; the agent reports the repair (``DriftRepaired``). A missing database and
anything orphaned wait for an operator (``pgplane ops drifts``): nothing is ever dropped.

A database something happened to since the report was taken (an operation ran or is running)
is left out of that comparison: the report may predate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.metrics import DRIFT
from producers.commands import Outbox, OutboxRelay
from readmodel.tables import DATABASES, DRIFTS, GONE, HOST_STATES, IN_FLIGHT, OPERATIONS, DatabaseStatus, DriftStatus
from schemas.commands import REPAIRABLE, DriftKind, RepairDatabase, drift_object
from schemas.envelope import Envelope
from schemas.events import PLATFORM_PROJECT, DriftDetected, DriftResolved

log = logging.getLogger("pgplane.reconciler")
ACTOR = "reconciler"


@dataclass(frozen=True)
class Served:
    """A database the read model places on the host."""

    id: uuid.UUID
    project_id: uuid.UUID
    dbname: str
    role: str
    status: str
    settled: bool
    """Nothing happened to it since the report was taken, and nothing is running on it."""


@dataclass(frozen=True)
class Report:
    reported_at: datetime
    databases: dict[str, str]
    """Each tenant-named database and its owner."""
    roles: frozenset[str]
    routes: frozenset[str]
    verifier_mismatch: frozenset[str]


@dataclass(frozen=True)
class Finding:
    kind: DriftKind
    object: str
    database: Served | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.object)


COMPARED = {DatabaseStatus.AVAILABLE.value, DatabaseStatus.SUSPENDED.value}
"""A suspended database keeps its role (without login), owner, route and password: a repair puts
them back the same way, and the agent makes a suspended database's role without login."""


def compare(report: Report, served: list[Served]) -> tuple[list[Finding], set[str]]:
    """The drifts the report shows, and the names left out of the comparison (not settled)."""
    unsettled = {name for d in served if not d.settled for name in (d.dbname, d.role)}
    findings = []
    for d in served:
        if not d.settled or d.status not in COMPARED:
            continue
        checks = [
            (DriftKind.DATABASE_MISSING, d.dbname not in report.databases),
            (DriftKind.ROLE_MISSING, d.role not in report.roles),
            (DriftKind.OWNER_CHANGED, d.dbname in report.databases and report.databases[d.dbname] != d.role),
            (DriftKind.ROUTE_MISSING, d.dbname not in report.routes),
            (DriftKind.VERIFIER_CHANGED, d.role in report.verifier_mismatch),
        ]
        findings += [
            Finding(kind, drift_object(kind, dbname=d.dbname, role=d.role), d) for kind, found in checks if found
        ]
    live = [d for d in served if d.status not in GONE]
    for name in sorted(set(report.databases) - {d.dbname for d in live} - unsettled):
        findings.append(Finding(DriftKind.DATABASE_ORPHANED, name))
    for name in sorted(report.roles - {d.role for d in live} - unsettled):
        findings.append(Finding(DriftKind.ROLE_ORPHANED, name))
    return findings, unsettled


class Reconciler:
    def __init__(self, engine: AsyncEngine, outbox: Outbox, *, interval: float) -> None:
        self._engine = engine
        self._outbox = outbox
        self._interval = interval
        self._compared: dict[str, uuid.UUID] = {}
        """The last report compared, per host (after a restart the last one is compared again:
        every id it produces is deterministic, so nothing is reported twice)."""

    async def run(self, stop: asyncio.Event, relay: OutboxRelay) -> None:
        while not stop.is_set():
            try:
                if await self.tick():
                    await relay.drain()
            except Exception:
                log.exception("reconciliation pass failed; the next pass retries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def tick(self) -> int:
        """Compare every host report not compared yet; returns how many were."""
        async with self._engine.connect() as conn:
            states = (await conn.execute(sa.select(HOST_STATES))).all()
        compared = 0
        for state in states:
            if self._compared.get(state.host_id) == state.report_id:
                continue
            async with self._engine.begin() as conn:
                await self._reconcile(conn, state)
            self._compared[state.host_id] = state.report_id
            compared += 1
        return compared

    async def _reconcile(self, conn: AsyncConnection, state: sa.Row[tuple[object, ...]]) -> None:
        host_id, report_id = str(state.host_id), state.report_id
        report = Report(
            reported_at=state.reported_at,
            databases={d["dbname"]: d["owner"] for d in state.databases},
            roles=frozenset(state.roles),
            routes=frozenset(state.routes),
            verifier_mismatch=frozenset(state.verifier_mismatch),
        )
        served = await _served(conn, host_id, report.reported_at)
        findings, unsettled = compare(report, served)
        known = await _known_drifts(conn, host_id, report.reported_at)
        for finding in findings:
            if finding.key in known:
                continue
            DRIFT.labels(kind=finding.kind.value).inc()
            log.warning("drift on host %s: %s %s", host_id, finding.kind.value, finding.object)
            database = finding.database
            detected = DriftDetected(
                host_id=host_id,
                kind=finding.kind,
                object=finding.object,
                database_id=database.id if database else None,
                repair=finding.kind in REPAIRABLE,
                report_id=report_id,
            )
            project_id = database.project_id if database else PLATFORM_PROJECT
            await self._outbox.event(conn, _event(detected, report_id, finding.key, project_id))
        found = {f.key for f in findings}
        for drift in await _open_drifts(conn, host_id):
            key = (drift.kind, drift.object)
            if key in found or drift.object in unsettled:
                continue
            resolved = DriftResolved(
                host_id=host_id, kind=DriftKind(drift.kind), object=drift.object, database_id=drift.database_id
            )
            project_id = drift.project_id or PLATFORM_PROJECT
            await self._outbox.event(conn, _event(resolved, report_id, key, project_id, resolved=True))
        await self._request_repairs(conn, host_id, report_id, findings)

    async def _request_repairs(
        self, conn: AsyncConnection, host_id: str, report_id: uuid.UUID, findings: list[Finding]
    ) -> None:
        repairs: dict[uuid.UUID, list[DriftKind]] = defaultdict(list)
        databases: dict[uuid.UUID, Served] = {}
        for finding in findings:
            if finding.kind in REPAIRABLE and finding.database is not None:
                repairs[finding.database.id].append(finding.kind)
                databases[finding.database.id] = finding.database
        for database_id, kinds in repairs.items():
            d = databases[database_id]
            command = RepairDatabase(database_id=d.id, dbname=d.dbname, role=d.role, repairs=kinds)
            envelope = Envelope.wrap(
                command,
                correlation_id=uuid.uuid5(report_id, str(d.id)),
                sequence=1,
                actor=ACTOR,
                project_id=d.project_id,
            )
            await self._outbox.command(conn, envelope, host_id=host_id, kind=command.KIND)


def _event(
    payload: DriftDetected | DriftResolved,
    report_id: uuid.UUID,
    key: tuple[str, str],
    project_id: uuid.UUID,
    *,
    resolved: bool = False,
) -> Envelope:
    name = f"{'resolved' if resolved else 'detected'}:{key[0]}:{key[1]}"
    return Envelope.wrap(
        payload,
        correlation_id=uuid.uuid5(report_id, name),
        sequence=0,
        actor=ACTOR,
        project_id=project_id,
    )


async def _served(conn: AsyncConnection, host_id: str, reported_at: datetime) -> list[Served]:
    busy = (
        sa.select(OPERATIONS.c.id)
        .where(OPERATIONS.c.database_id == DATABASES.c.id, OPERATIONS.c.status.in_(IN_FLIGHT))
        .exists()
    )
    rows = await conn.execute(
        sa.select(
            DATABASES.c.id,
            DATABASES.c.project_id,
            DATABASES.c.dbname,
            DATABASES.c.role,
            DATABASES.c.status,
            sa.and_(DATABASES.c.updated_at < reported_at, ~busy).label("settled"),
        ).where(DATABASES.c.host_id == host_id)
    )
    return [Served(**row._mapping) for row in rows]


async def _known_drifts(conn: AsyncConnection, host_id: str, reported_at: datetime) -> set[tuple[str, str]]:
    """Drifts reported already: open ones, and ones repaired after this report was taken."""
    rows = await conn.execute(
        sa.select(DRIFTS.c.kind, DRIFTS.c.object).where(
            DRIFTS.c.host_id == host_id,
            sa.or_(
                DRIFTS.c.status == DriftStatus.OPEN.value,
                sa.and_(DRIFTS.c.status == DriftStatus.REPAIRED.value, DRIFTS.c.repaired_at >= reported_at),
            ),
        )
    )
    return {(row.kind, row.object) for row in rows}


async def _open_drifts(conn: AsyncConnection, host_id: str) -> list[sa.Row[tuple[object, ...]]]:
    query = sa.select(DRIFTS).where(DRIFTS.c.host_id == host_id, DRIFTS.c.status == DriftStatus.OPEN.value)
    return list((await conn.execute(query)).all())
