"""An operator recovering operations by hand (``pgplane ops``).

- **redrive** a dead-lettered command: when the server gave up delivering it before the agent
  could end its operation, it is retried (below); usually the agent dead-lettered it and its
  operation already ended ``failed`` with everything it did undone, so the same command runs
  again as a *new* operation (``retry_of`` names the old
  one), accepted the way the API accepts one. Its id follows from the dead-lettered operation's,
  so redriving twice makes one operation. Only commands that change a database are redriven,
  and only while that database has seen no operation since: anything else is asked again
  through the API.
- **retry** a stuck operation: its signed command is published again under a new message id;
  the agent's ledger resumes the saga where it stopped (a finished one only repeats its events).
- **fail** a stuck operation: its host is told to stop and undo it, and it ends ``failed`` in
  the read model at once, with the operator's reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.metadata.tables import OUTBOX
from producers.commands import Outbox, project_event, request_cancel, request_operation
from readmodel.projection import BUSY, CREATES_DATABASE
from readmodel.tables import DATABASES, GONE, IN_FLIGHT, OPERATIONS, DatabaseStatus, OperationStatus
from schemas.commands import CancelOperation, DatabaseCommand
from schemas.envelope import Envelope
from schemas.events import OperationFailed, RetryRequested

OPERATOR_ENDING = 1_000_000
"""The sequence of an ending an operator gives an operation: above any its saga records, so the
read model keeps it whatever the host reports later."""


class RecoveryRefused(Exception):
    """The operator's request would not be safe; the message says what to do instead."""


@dataclass(frozen=True)
class Redriven:
    operation_id: uuid.UUID
    created: bool


def redrive_id(dead: Envelope) -> uuid.UUID:
    return uuid.uuid5(dead.correlation_id, "redrive")


async def redrive(conn: AsyncConnection, outbox: Outbox, dead: Envelope, *, actor: str) -> Redriven:
    """Run a dead-lettered command again as a new operation (in the caller's transaction)."""
    cmd = dead.payload()
    if not isinstance(cmd, DatabaseCommand):
        raise RecoveryRefused(f"{dead.type} is not a command pgplane can redrive")
    operation_id = redrive_id(dead)
    if await _operation(conn, operation_id) is not None:
        return Redriven(operation_id, created=False)
    if cmd.KIND not in BUSY:
        raise RecoveryRefused(f"a {cmd.KIND.value} is not redriven: ask for it again through the API")
    original = await _operation(conn, dead.correlation_id)
    if original is None or original.status != OperationStatus.FAILED.value:
        status = original.status if original is not None else "unknown"
        raise RecoveryRefused(f"operation {dead.correlation_id} is {status}: only a failed one runs again")
    database = (
        await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == cmd.database_id).with_for_update())
    ).one()
    if database.last_operation_id != dead.correlation_id:
        raise RecoveryRefused("the database has changed since this command failed: ask again through the API")
    expected = DatabaseStatus.FAILED if cmd.KIND in CREATES_DATABASE else DatabaseStatus.AVAILABLE
    if database.status != expected.value:
        raise RecoveryRefused(f"the database is {database.status}: redrive would not be safe")
    if cmd.KIND in CREATES_DATABASE:
        await _name_still_free(conn, database)
    await request_operation(
        conn,
        outbox,
        command=cmd,
        name=database.name,
        host_id=database.host_id,
        credentials_version=getattr(cmd, "credentials_version", database.credentials_version),
        actor=actor,
        project_id=dead.project_id,
        backup_id=original.backup_id,
        trigger="redrive",
        operation_id=operation_id,
        point_in_time=original.point_in_time,
        retry_of=dead.correlation_id,
    )
    return Redriven(operation_id, created=True)


async def _name_still_free(conn: AsyncConnection, database: Any) -> None:
    taken = sa.select(DATABASES.c.id).where(
        DATABASES.c.project_id == database.project_id,
        DATABASES.c.name == database.name,
        DATABASES.c.status.not_in(GONE),
        DATABASES.c.id != database.id,
    )
    if (await conn.execute(taken)).first():
        raise RecoveryRefused(f"the project has another database named {database.name!r} now: ask through the API")


async def stuck_command(conn: AsyncConnection, operation_id: uuid.UUID) -> tuple[str, bytes]:
    """The stuck operation's signed command as the API queued it: (subject, body)."""
    operation = await _operation(conn, operation_id)
    if operation is None:
        raise RecoveryRefused(f"no operation {operation_id}")
    if operation.status not in IN_FLIGHT:
        raise RecoveryRefused(f"operation {operation_id} already ended {operation.status}")
    row = (
        await conn.execute(sa.select(OUTBOX.c.subject, OUTBOX.c.payload).where(OUTBOX.c.msg_id == f"{operation_id}:1"))
    ).first()
    if row is None:
        raise RecoveryRefused(
            f"the command of operation {operation_id} is no longer kept (older than the idempotency window):"
            " fail it instead"
        )
    return str(row.subject), bytes(row.payload)


async def note_retry(conn: AsyncConnection, outbox: Outbox, command: Envelope, *, actor: str) -> None:
    cmd = command.payload()
    assert isinstance(cmd, DatabaseCommand)
    retry = RetryRequested(database_id=cmd.database_id, operation_id=command.correlation_id)
    await outbox.event(conn, project_event(retry, project_id=command.project_id, actor=actor))


async def fail(conn: AsyncConnection, outbox: Outbox, operation_id: uuid.UUID, *, actor: str, reason: str) -> None:
    """End a stuck operation ``failed`` now and tell its host to stop and undo it."""
    operation = await _operation(conn, operation_id)
    if operation is None:
        raise RecoveryRefused(f"no operation {operation_id}")
    if operation.status not in IN_FLIGHT:
        raise RecoveryRefused(f"operation {operation_id} already ended {operation.status}")
    database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == operation.database_id))).one()
    cancel = CancelOperation(
        database_id=database.id, dbname=database.dbname, role=database.role, operation_id=operation_id
    )
    await request_cancel(
        conn, outbox, command=cancel, host_id=database.host_id, actor=actor, project_id=operation.project_id
    )
    ended = OperationFailed(
        kind=operation.kind, database_id=operation.database_id, reason=f"failed by an operator: {reason}"
    )
    envelope = Envelope.wrap(
        ended, correlation_id=operation_id, sequence=OPERATOR_ENDING, actor=actor, project_id=operation.project_id
    )
    await outbox.event(conn, envelope)


async def in_flight(conn: AsyncConnection, operation_id: uuid.UUID) -> bool:
    operation = await _operation(conn, operation_id)
    return operation is not None and operation.status in IN_FLIGHT


async def _operation(conn: AsyncConnection, operation_id: uuid.UUID) -> Any:
    return (await conn.execute(sa.select(OPERATIONS).where(OPERATIONS.c.id == operation_id))).first()
