"""Accepting an operation (its command queued in the outbox, its rows in the read model at once),
refusing a second one on a busy database, and cancelling a running one."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.models import Accepted, BackupAccepted, OperationPublic
from api.platform import Platform
from api.principal import Principal
from api.usecases.loading import backup_public, database_public, load_database, load_operation
from producers.commands import request_cancel, request_operation
from readmodel.tables import BACKUPS, DATABASES, IN_FLIGHT, OPERATIONS
from schemas.commands import CancelOperation, DatabaseCommand


async def ensure_idle(conn: AsyncConnection, database_id: uuid.UUID) -> None:
    """409 while another operation on this database has not finished (one at a time, in order)."""
    busy = sa.and_(OPERATIONS.c.database_id == database_id, OPERATIONS.c.status.in_(IN_FLIGHT))
    if (await conn.execute(sa.select(OPERATIONS.c.id).where(busy))).first():
        raise ApiError(409, "operation_in_progress", "another operation on this database has not finished yet")


async def accept_operation(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    command: DatabaseCommand,
    *,
    name: str,
    project_id: uuid.UUID,
    credentials_version: int,
    host_id: str | None = None,
    backup_id: uuid.UUID | None = None,
    point_in_time: datetime | None = None,
) -> Accepted:
    """Queue ``command`` as a new operation; the 202 body: the operation and the database it acts on."""
    operation_id = await request_operation(
        conn,
        platform.outbox,
        command=command,
        name=name,
        host_id=host_id or platform.settings.host_id,
        credentials_version=credentials_version,
        actor=principal.actor,
        project_id=project_id,
        backup_id=backup_id,
        point_in_time=point_in_time,
    )
    database = await load_database(conn, command.database_id, principal)
    return Accepted(
        operation=await load_operation(conn, operation_id, principal), database=database_public(platform, database)
    )


async def backup_accepted(conn: AsyncConnection, principal: Principal, operation_id: uuid.UUID) -> BackupAccepted:
    """The 202 body of a backup operation: the operation and the backup it makes, checks or deletes."""
    operation = await load_operation(conn, operation_id, principal)
    assert operation.backup_id is not None
    backup = (await conn.execute(sa.select(BACKUPS).where(BACKUPS.c.id == operation.backup_id))).one()
    return BackupAccepted(operation=operation, backup=backup_public(backup))


async def cancel_operation(
    conn: AsyncConnection, platform: Platform, principal: Principal, operation_id: uuid.UUID
) -> OperationPublic:
    """Ask the operation's host to stop it; it undoes what it did and ends ``compensated``."""
    operation = await load_operation(conn, operation_id, principal)
    if operation.status not in IN_FLIGHT:
        raise ApiError(409, "operation_finished", f"the operation already ended {operation.status}")
    database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == operation.database_id))).one()
    command = CancelOperation(
        database_id=database.id, dbname=database.dbname, role=database.role, operation_id=operation_id
    )
    await request_cancel(
        conn,
        platform.outbox,
        command=command,
        host_id=database.host_id,
        actor=principal.actor,
        project_id=operation.project_id,
    )
    return operation
