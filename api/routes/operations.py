"""Long-running operations and their saga steps."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import OperationPublic
from api.usecases.loading import load_operation
from api.usecases.operations import cancel_operation as cancel
from readmodel.tables import IN_FLIGHT

router = APIRouter(prefix="/operations", tags=["operations"], responses=errors(401, 403, 422, 429))
MAX_WAIT_SECONDS = 60
LOOK_AGAIN_SECONDS = 5.0
"""A waiting request reads the operation again this often, even without a notification (the
listener wakes every waiting request when it listens again after a lost connection; this covers a
connection lost without a word)."""


@router.get("/{operation_id}", response_model=OperationPublic, responses=errors(404))
async def read_operation(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    operation_id: uuid.UUID,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for the operation to end (succeeded, failed or compensated) before"
            " answering; it answers as soon as it ends, or with the operation as it stands when the time is up.",
        ),
    ] = 0,
) -> OperationPublic:
    """Status, steps and error of one operation; with ``wait``, once it has ended (no polling needed)."""
    deadline = time.monotonic() + wait
    with platform.operation_ends.watch(str(operation_id)) as ended:  # before reading: no end is missed
        while True:
            async with platform.autocommit.connect() as conn:
                operation = await load_operation(conn, operation_id, principal)
            remaining = deadline - time.monotonic()
            if operation.status not in IN_FLIGHT or remaining <= 0:
                return operation
            await ended.wait(min(remaining, LOOK_AGAIN_SECONDS))


@router.post(
    "/{operation_id}/cancel", status_code=202, response_model=OperationPublic, responses=errors(413, 415, 404, 409)
)
async def cancel_operation(
    *, principal: CurrentPrincipal, mutation: MutationDep, operation_id: uuid.UUID
) -> OperationPublic:
    """Stop a running operation: it undoes what it did and ends ``compensated``."""
    return await mutation.run(lambda conn: cancel(conn, mutation.platform, principal, operation_id), OperationPublic)
