"""Long-running operations and their saga steps."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentPrincipal, PlatformDep, Principal
from api.errors import not_found
from api.models import OperationPublic, StepPublic
from infra.metadata.models import OPERATIONS, STEPS

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
