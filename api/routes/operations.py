"""Long-running operations and their saga steps."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import OperationPublic
from api.usecases.loading import load_operation
from api.usecases.operations import cancel_operation as cancel

router = APIRouter(prefix="/operations", tags=["operations"], responses=errors(401, 403, 422, 429))


@router.get("/{operation_id}", response_model=OperationPublic, responses=errors(404))
async def read_operation(
    *, platform: PlatformDep, principal: CurrentPrincipal, operation_id: uuid.UUID
) -> OperationPublic:
    """Status, steps and error of one operation."""
    async with platform.engine.connect() as conn:
        return await load_operation(conn, operation_id, principal)


@router.post(
    "/{operation_id}/cancel", status_code=202, response_model=OperationPublic, responses=errors(413, 415, 404, 409)
)
async def cancel_operation(
    *, principal: CurrentPrincipal, mutation: MutationDep, operation_id: uuid.UUID
) -> OperationPublic:
    """Stop a running operation: it undoes what it did and ends ``compensated``."""
    return await mutation.run(lambda conn: cancel(conn, mutation.platform, principal, operation_id), OperationPublic)
