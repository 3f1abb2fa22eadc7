"""Asking for a backup or for a backup's deletion: shared by the API and the scheduler.

Both only queue an operation through the outbox (``request_operation``); given an
``operation_id`` and ``backup_id`` derived from a schedule slot, a second scheduler replica
asking for the same slot produces the very same messages, which the outbox row lock and the
bus's duplicate window turn into one.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from producers.commands import Outbox, request_operation
from schemas.commands import BackupDatabase, DeleteBackup, backup_object_key


async def request_backup(
    conn: AsyncConnection,
    outbox: Outbox,
    *,
    database: Row[Any],
    max_bytes: int,
    actor: str,
    trigger: str,
    backup_id: uuid.UUID | None = None,
    operation_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Queue a backup of ``database``; returns ``(operation_id, backup_id)``."""
    backup_id = backup_id or uuid.uuid4()
    command = BackupDatabase(
        database_id=database.id,
        dbname=database.dbname,
        role=database.role,
        backup_id=backup_id,
        object_key=backup_object_key(database.project_id, database.id, backup_id),
        max_bytes=max_bytes,
    )
    queued = await request_operation(
        conn,
        outbox,
        command=command,
        name=database.name,
        host_id=database.host_id,
        credentials_version=database.credentials_version,
        actor=actor,
        project_id=database.project_id,
        backup_id=backup_id,
        trigger=trigger,
        operation_id=operation_id,
        object_key=command.object_key,
    )
    return queued, backup_id


async def request_backup_deletion(
    conn: AsyncConnection,
    outbox: Outbox,
    *,
    backup: Row[Any],
    database: Row[Any],
    actor: str,
    reason: str,
    operation_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Queue the removal of a backup's object; ``reason`` is ``requested`` or ``retention``."""
    command = DeleteBackup(
        database_id=database.id,
        dbname=database.dbname,
        role=database.role,
        backup_id=backup.id,
        object_key=backup.object_key,
        reason=reason,
    )
    return await request_operation(
        conn,
        outbox,
        command=command,
        name=database.name,
        host_id=database.host_id,
        credentials_version=database.credentials_version,
        actor=actor,
        project_id=database.project_id,
        backup_id=backup.id,
        trigger="retention" if reason == "retention" else "api",
        operation_id=operation_id,
    )
