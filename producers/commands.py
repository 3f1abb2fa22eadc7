"""Accepting an operation and getting its messages onto the bus (transactional outbox).

The API writes the ``OperationRequested`` event's read-model rows, the event and the command
into the outbox in the same transaction as the request, then publishes after commit with
``Nats-Msg-Id`` set. A crash between commit and publish loses nothing: the relay publishes
whatever is pending, and a duplicate publish is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.metadata.tables import IDEMPOTENCY, OUTBOX, RATE_WINDOWS
from infra.signing import CommandSigner
from readmodel.projection import apply
from schemas.commands import CancelOperation, DatabaseCommand, OperationKind
from schemas.envelope import Envelope, Payload
from schemas.events import CancelRequested, OperationRequested
from schemas.subjects import Subjects

log = logging.getLogger("pgplane.outbox")


@dataclass(frozen=True)
class Outbox:
    """Where accepted messages wait, in the caller's transaction, to be published after commit:
    events for every subscriber, and commands, signed, for their data host."""

    subjects: Subjects
    signer: CommandSigner

    async def event(self, conn: AsyncConnection, event: Envelope) -> None:
        """Apply an event made here to the read model now (read your writes) and queue it."""
        await apply(conn, event)
        await _enqueue(conn, [_event_row(self.subjects, event)])

    async def command(self, conn: AsyncConnection, command: Envelope, *, host_id: str, kind: OperationKind) -> None:
        await _enqueue(conn, [self._command_row(command, host_id=host_id, kind=kind)])

    async def event_and_command(
        self, conn: AsyncConnection, event: Envelope, command: Envelope, *, host_id: str, kind: OperationKind
    ) -> None:
        """``event`` (applied now, as ``event`` does) and the command it announces, queued in one statement."""
        await apply(conn, event)
        await _enqueue(conn, [_event_row(self.subjects, event), self._command_row(command, host_id=host_id, kind=kind)])

    def _command_row(self, command: Envelope, *, host_id: str, kind: OperationKind) -> Queued:
        subject = self.subjects.command(host_id, kind)
        return Queued(self.signer.sign(command, subject), subject, self.subjects.commands_stream)


class Queued(NamedTuple):
    """A message as the outbox keeps it: what, and where it is published."""

    envelope: Envelope
    subject: str
    stream: str


def _event_row(subjects: Subjects, event: Envelope) -> Queued:
    return Queued(event, subjects.event(event.type), subjects.events_stream)


async def request_operation(
    conn: AsyncConnection,
    outbox: Outbox,
    *,
    command: DatabaseCommand,
    name: str,
    host_id: str,
    credentials_version: int,
    actor: str,
    project_id: uuid.UUID,
    backup_id: uuid.UUID | None = None,
    trigger: str = "api",
    operation_id: uuid.UUID | None = None,
    point_in_time: datetime | None = None,
    object_key: str | None = None,
    retry_of: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record an operation and queue its command; a given ``operation_id`` makes it deterministic."""
    operation_id = operation_id or uuid.uuid4()
    now = datetime.now(UTC)
    requested = Envelope.wrap(
        OperationRequested(
            kind=command.KIND,
            database_id=command.database_id,
            name=name,
            host_id=host_id,
            dbname=command.dbname,
            role=command.role,
            credentials_version=credentials_version,
            requested_at=now,
            backup_id=backup_id,
            trigger=trigger,
            point_in_time=point_in_time,
            object_key=object_key,
            retry_of=retry_of,
        ),
        correlation_id=operation_id,
        sequence=0,
        actor=actor,
        project_id=project_id,
        occurred_at=now,
    )
    message = Envelope.wrap(
        command,
        correlation_id=operation_id,
        sequence=1,
        actor=actor,
        project_id=project_id,
        causation_id=requested.id,
        occurred_at=now,
    )
    await outbox.event_and_command(conn, requested, message, host_id=host_id, kind=command.KIND)
    return operation_id


async def queue_event(conn: AsyncConnection, subjects: Subjects, event: Envelope) -> None:
    """Queue an event for the projector alone (no read-your-writes): one it must number in order."""
    await _enqueue(conn, [_event_row(subjects, event)])


async def _enqueue(conn: AsyncConnection, queued: list[Queued]) -> None:
    """One statement; the rows' ids (the publishing order) follow the list's order."""
    await conn.execute(
        sa.insert(OUTBOX).values(
            [
                {
                    "msg_id": q.envelope.msg_id,
                    "subject": q.subject,
                    "stream": q.stream,
                    "payload": q.envelope.model_dump_json().encode(),
                    "created_at": q.envelope.occurred_at,
                }
                for q in queued
            ]
        )
    )


async def request_cancel(
    conn: AsyncConnection,
    outbox: Outbox,
    *,
    command: CancelOperation,
    host_id: str,
    actor: str,
    project_id: uuid.UUID,
) -> None:
    """Record who asked to stop an operation and send the order to its host."""
    requested = project_event(
        CancelRequested(database_id=command.database_id, operation_id=command.operation_id),
        project_id=project_id,
        actor=actor,
    )
    message = Envelope.wrap(
        command,
        correlation_id=requested.correlation_id,
        sequence=1,
        actor=actor,
        project_id=project_id,
        causation_id=requested.id,
    )
    await outbox.event_and_command(conn, requested, message, host_id=host_id, kind=command.KIND)


def project_event(payload: Payload, *, project_id: uuid.UUID, actor: str) -> Envelope:
    """An event outside any operation (project or token created): it is its own correlation."""
    return Envelope.wrap(payload, correlation_id=uuid.uuid4(), sequence=0, actor=actor, project_id=project_id)


class OutboxRelay:
    def __init__(self, engine: AsyncEngine, js: JetStreamContext, *, idempotency_ttl: timedelta) -> None:
        self._engine = engine
        self._js = js
        self._ttl = idempotency_ttl

    async def drain(self) -> int:
        """Publish every pending message in order; rows locked by a concurrent drain are skipped.

        The statement that picks the rows marks them published (one round trip, the locks held
        to the commit); a publish that fails rolls the mark back, and the rows stay pending."""
        async with self._engine.begin() as conn:
            pending = (
                sa.select(OUTBOX.c.id)
                .where(OUTBOX.c.published_at.is_(None))
                .order_by(OUTBOX.c.id)
                .limit(500)
                .with_for_update(skip_locked=True)
            )
            picked = (
                sa.update(OUTBOX)
                .where(OUTBOX.c.id.in_(pending.scalar_subquery()))
                .values(published_at=sa.func.now())
                .returning(OUTBOX.c.id, OUTBOX.c.msg_id, OUTBOX.c.subject, OUTBOX.c.stream, OUTBOX.c.payload)
            )
            rows = sorted((await conn.execute(picked)).all(), key=lambda row: row.id)
            for row in rows:  # each after the one before is stored: an operation's requested event
                # is on the events stream before its command can make the agent emit the next ones
                await self._js.publish(
                    row.subject, row.payload, stream=row.stream, headers={"Nats-Msg-Id": row.msg_id}, timeout=10
                )
            return len(rows)

    async def run(self, stop: asyncio.Event, *, interval: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.drain()
                await self._purge()
            except Exception:
                log.exception("outbox relay pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _purge(self) -> None:
        cutoff = datetime.now(UTC) - self._ttl
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(IDEMPOTENCY).where(IDEMPOTENCY.c.created_at < cutoff))
            await conn.execute(sa.delete(OUTBOX).where(OUTBOX.c.published_at < cutoff))
            stale = datetime.now(UTC) - timedelta(minutes=2)  # request rate windows long over
            await conn.execute(sa.delete(RATE_WINDOWS).where(RATE_WINDOWS.c.window_started < stale))
