"""Finding what the caller may see, and its public form. Another tenant's resource is not found."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import BackupPublic, DatabasePublic, OperationPublic, StepPublic
from api.platform import Platform
from api.principal import Principal
from readmodel.tables import BACKUPS, DATABASES, GONE, OPERATIONS, STEPS, BackupStatus, DatabaseStatus


async def load_database(
    conn: AsyncConnection, database_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Row[Any]:
    query = sa.select(DATABASES).where(DATABASES.c.id == database_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise not_found("database")
    principal.admit(row.project_id, "database")
    return row


async def load_live_database(
    conn: AsyncConnection, database_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Row[Any]:
    """A database that exists on its host: deleted ones and failed creates are not found."""
    row = await load_database(conn, database_id, principal, for_update=for_update)
    if row.status in GONE:
        raise not_found("database")
    return row


def check_created(database: Row[Any]) -> None:
    if database.status == DatabaseStatus.CREATING:
        raise ApiError(409, "database_not_available", "the database is still being created")


async def load_backup(
    conn: AsyncConnection, backup_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Row[Any]:
    query = sa.select(BACKUPS).where(BACKUPS.c.id == backup_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None or row.status == BackupStatus.DELETED:
        raise not_found("backup")
    principal.admit(row.project_id, "backup")
    return row


def check_completed(backup: Row[Any]) -> None:
    if backup.status != BackupStatus.COMPLETED:
        raise ApiError(409, "backup_not_completed", f"the backup is {backup.status}, not completed")


STEP_ROWS = (
    sa.select(
        sa.func.coalesce(
            sa.func.json_agg(
                aggregate_order_by(
                    sa.func.json_build_array(STEPS.c.name, STEPS.c.status, STEPS.c.detail), STEPS.c.position
                )
            ),
            sa.literal_column("'[]'::json"),
        )
    )
    .where(STEPS.c.operation_id == OPERATIONS.c.id)
    .scalar_subquery()
)
"""An operation's steps in order, as ``[name, status, detail]`` arrays: read with the operation."""


async def load_operation(conn: AsyncConnection, operation_id: uuid.UUID, principal: Principal) -> OperationPublic:
    """The operation and its steps, in one statement."""
    query = sa.select(OPERATIONS, sa.type_coerce(STEP_ROWS, sa.JSON).label("step_rows"))
    row = (await conn.execute(query.where(OPERATIONS.c.id == operation_id))).first()
    if row is None:
        raise not_found("operation")
    principal.admit(row.project_id, "operation")
    fields = {k: v for k, v in row._mapping.items() if k in OperationPublic.model_fields}
    if not principal.is_admin:
        fields["error_detail"] = None
    steps = [StepPublic(name=name, status=status, detail=detail) for name, status, detail in row.step_rows]
    return OperationPublic(**fields, steps=steps)


def database_public(platform: Platform, row: Row[Any]) -> DatabasePublic:
    return DatabasePublic(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        status=row.status,
        host=platform.settings.pgbouncer_public_host,
        port=platform.settings.pgbouncer_port,
        dbname=row.dbname,
        user=row.role,
        last_operation_id=row.last_operation_id,
        last_verified_backup_id=row.last_verified_backup_id,
        last_verified_restore_at=row.last_verified_restore_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def backup_public(row: Row[Any]) -> BackupPublic:
    return BackupPublic.model_validate({k: v for k, v in row._mapping.items() if k in BackupPublic.model_fields})
