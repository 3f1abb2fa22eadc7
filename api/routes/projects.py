"""Projects and their API tokens."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import AdminPrincipal, CurrentPrincipal, MutationDep
from api.errors import errors
from api.models import ProjectCreate, ProjectPublic, TokenCreate, TokenCreated
from api.usecases import projects

router = APIRouter(prefix="/projects", tags=["projects"], responses=errors(401, 422))


@router.post("", status_code=201, response_model=ProjectPublic, responses=errors(413, 415, 403))
async def create_project(*, principal: AdminPrincipal, mutation: MutationDep, body: ProjectCreate) -> ProjectPublic:
    """Create a project (admin token)."""
    return await mutation.run(
        lambda conn: projects.create_project(conn, mutation.platform, principal, body.name, body.plan), ProjectPublic
    )


@router.post("/{project_id}/tokens", status_code=201, response_model=TokenCreated, responses=errors(413, 415, 404))
async def create_token(
    *, principal: CurrentPrincipal, mutation: MutationDep, project_id: uuid.UUID, body: TokenCreate
) -> TokenCreated:
    """Create an API token scoped to one project; the secret is shown once (a retry with the same
    Idempotency-Key within 24 h shows it again, from an encrypted record) and stored hashed."""
    principal.check_project(project_id)
    return await mutation.run(
        lambda conn: projects.create_token(conn, mutation.platform, principal, project_id, body.name),
        TokenCreated,
        sealed=True,
    )
