"""Platform administration (admin token): what spans tenants or changes what they are entitled to."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import AdminPrincipal, MutationDep
from api.errors import errors
from api.models import PlanChange, ProjectPublic
from api.usecases import projects

router = APIRouter(prefix="/admin", tags=["admin"], responses=errors(401, 403, 422, 429))


@router.post("/projects/{project_id}/plan", response_model=ProjectPublic, responses=errors(404, 413, 415))
async def change_plan(
    *, principal: AdminPrincipal, mutation: MutationDep, project_id: uuid.UUID, body: PlanChange
) -> ProjectPublic:
    """Move a project to another plan; its limits (rate, quota, retention) change at once. A
    downgrade over a limit deletes nothing: new creations are refused until it is back under."""
    return await mutation.run(
        lambda conn: projects.change_plan(conn, mutation.platform, principal, project_id, body.plan), ProjectPublic
    )
