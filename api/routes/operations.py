"""Long-running operations and their saga steps."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentPrincipal, PlatformDep, Principal
from api.errors import ApiError, not_found
from api.models import OperationPublic, StepPublic
from api.mutations import mutate
from producers.commands import request_cancel
from readmodel.tables import DATABASES, IN_FLIGHT, OPERATIONS, STEPS
from schemas.commands import CancelOperation

router = APIRouter(prefix="/operations", tags=["operations"])


async def load_operation(conn: AsyncConnection, operation_id: uuid.UUID, principal: Principal) -> OperationPublic:
    row = (await conn.execute(sa.select(OPERATIONS).where(OPERATIONS.c.id == operation_id))).first()
    if row is None or not (principal.is_admin or row.project_id == principal.project_id):
        raise not_found("operation")
    steps = (
        await conn.execute(
            sa.select(STEPS.c.name, STEPS.c.status, STEPS.c.detail)
            .where(STEPS.c.operation_id == operation_id)
            .order_by(STEPS.c.position)
        )
    ).all()
    return OperationPublic(
        **{k: v for k, v in row._mapping.items() if k in OperationPublic.model_fields},
        steps=[StepPublic(name=s.name, status=s.status, detail=s.detail) for s in steps],
    )


@router.get("/{operation_id}", response_model=OperationPublic)
async def read_operation(
    *, platform: PlatformDep, principal: CurrentPrincipal, operation_id: uuid.UUID
) -> OperationPublic:
    """Status, steps and error of one operation."""
    async with platform.engine.connect() as conn:
        return await load_operation(conn, operation_id, principal)


@router.post("/{operation_id}/cancel", status_code=202, response_model=OperationPublic)
async def cancel_operation(
    *, platform: PlatformDep, principal: CurrentPrincipal, operation_id: uuid.UUID
) -> JSONResponse:
    """Stop a running operation: it undoes what it did and ends ``compensated``."""

    async def change(conn: AsyncConnection) -> OperationPublic:
        operation = await load_operation(conn, operation_id, principal)
        if operation.status not in IN_FLIGHT:
            raise ApiError(409, "operation_finished", f"the operation already ended {operation.status}")
        database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == operation.database_id))).one()
        command = CancelOperation(
            database_id=database.id, dbname=database.dbname, role=database.role, operation_id=operation_id
        )
        await request_cancel(
            conn,
            platform.subjects,
            command=command,
            host_id=database.host_id,
            actor=principal.actor,
            project_id=operation.project_id,
        )
        return operation

    return await mutate(
        platform,
        principal,
        key=None,
        method="POST",
        path=f"/operations/{operation_id}/cancel",
        body=None,
        status_code=202,
        change=change,
    )
