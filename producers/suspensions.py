"""Suspending an organization's databases, and resuming them.

The organization's row says what is wanted (``suspended_at``); ``converge`` queues a suspend or a
resume operation, on the data host like every other, for each live database of its projects that
differs and has no operation running. It runs where the wish changes (the admin API, a payment)
and on every scheduler tick, so a database that was busy then is caught up later. The operation
ids derive from the database and the moment of the wish: two schedulers, or the API and a
scheduler, queue the same operation once; one that failed is not retried in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.metadata.tables import ORGANIZATIONS
from producers.commands import Outbox, OutboxRelay, project_event, request_operation
from readmodel.tables import DATABASES, IN_FLIGHT, OPERATIONS, PROJECTS, DatabaseStatus
from schemas.commands import ResumeDatabase, SuspendDatabase
from schemas.events import OrganizationResumed, OrganizationSuspended

log = logging.getLogger("pgplane.suspensions")
OVERDUE = "payment overdue"
SCHEDULER = "scheduler"


async def suspend(
    conn: AsyncConnection, outbox: Outbox, organization_id: uuid.UUID, reason: str, *, actor: str
) -> bool:
    """Want the organization suspended (audited); ``False`` when it already is."""
    now = datetime.now(UTC)
    changed = (
        await conn.execute(
            sa.update(ORGANIZATIONS)
            .where(ORGANIZATIONS.c.id == organization_id, ORGANIZATIONS.c.suspended_at.is_(None))
            .values(suspended_at=now, suspended_reason=reason, suspension_changed_at=now)
            .returning(ORGANIZATIONS.c.id)
        )
    ).first()
    if changed is not None:
        event = project_event(OrganizationSuspended(reason=reason), project_id=organization_id, actor=actor)
        await outbox.event(conn, event)
    return changed is not None


async def resume(conn: AsyncConnection, outbox: Outbox, organization_id: uuid.UUID, *, actor: str) -> bool:
    """Want the organization's databases back (audited); ``False`` when it is not suspended."""
    changed = (
        await conn.execute(
            sa.update(ORGANIZATIONS)
            .where(ORGANIZATIONS.c.id == organization_id, ORGANIZATIONS.c.suspended_at.is_not(None))
            .values(suspended_at=None, suspended_reason=None, suspension_changed_at=datetime.now(UTC))
            .returning(ORGANIZATIONS.c.id)
        )
    ).first()
    if changed is not None:
        await outbox.event(conn, project_event(OrganizationResumed(), project_id=organization_id, actor=actor))
    return changed is not None


async def converge(
    conn: AsyncConnection, outbox: Outbox, *, actor: str, organization_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Queue what brings each idle database to its organization's wish; the operations queued."""
    suspended = ORGANIZATIONS.c.suspended_at.is_not(None)
    busy = sa.exists().where(OPERATIONS.c.database_id == DATABASES.c.id, OPERATIONS.c.status.in_(IN_FLIGHT))
    query = (
        sa.select(DATABASES, ORGANIZATIONS.c.suspended_at, ORGANIZATIONS.c.suspension_changed_at)
        .join(PROJECTS, PROJECTS.c.id == DATABASES.c.project_id)
        .join(ORGANIZATIONS, ORGANIZATIONS.c.id == PROJECTS.c.organization_id)
        .where(
            sa.or_(
                sa.and_(suspended, DATABASES.c.status == DatabaseStatus.AVAILABLE.value),
                sa.and_(~suspended, DATABASES.c.status == DatabaseStatus.SUSPENDED.value),
            ),
            ~busy,
        )
    )
    if organization_id is not None:
        query = query.where(ORGANIZATIONS.c.id == organization_id)
    queued = []
    for row in (await conn.execute(query)).all():
        command_type = SuspendDatabase if row.suspended_at is not None else ResumeDatabase
        operation_id = uuid.uuid5(row.id, f"{command_type.KIND.value}:{row.suspension_changed_at.isoformat()}")
        tried = (await conn.execute(sa.select(OPERATIONS.c.id).where(OPERATIONS.c.id == operation_id))).first()
        if tried is not None:
            continue  # ran already and did not succeed: an operator looks at it, no retry loop
        command = command_type(database_id=row.id, dbname=row.dbname, role=row.role)
        await request_operation(
            conn,
            outbox,
            command=command,
            name=row.name,
            host_id=row.host_id,
            credentials_version=row.credentials_version,
            actor=actor,
            project_id=row.project_id,
            operation_id=operation_id,
        )
        queued.append(operation_id)
    return queued


async def suspend_overdue(conn: AsyncConnection, outbox: Outbox) -> list[uuid.UUID]:
    """Organizations whose late payment outlived its grace period are suspended."""
    overdue = (
        (
            await conn.execute(
                sa.select(ORGANIZATIONS.c.id).where(
                    ORGANIZATIONS.c.billing_status == "past_due",
                    ORGANIZATIONS.c.grace_until <= datetime.now(UTC),
                    ORGANIZATIONS.c.suspended_at.is_(None),
                )
            )
        )
        .scalars()
        .all()
    )
    for organization_id in overdue:
        await suspend(conn, outbox, organization_id, OVERDUE, actor=SCHEDULER)
    return list(overdue)


class Suspensions:
    """The scheduler's part: overdue organizations suspended, and every database brought in line."""

    def __init__(self, engine: AsyncEngine, outbox: Outbox, *, interval: float) -> None:
        self._engine = engine
        self._outbox = outbox
        self._interval = interval

    async def run(self, stop: asyncio.Event, relay: OutboxRelay) -> None:
        while not stop.is_set():
            try:
                async with self._engine.begin() as conn:
                    await suspend_overdue(conn, self._outbox)
                    await converge(conn, self._outbox, actor=SCHEDULER)
                await relay.drain()
            except Exception:
                log.exception("suspensions failed; the next tick tries again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
