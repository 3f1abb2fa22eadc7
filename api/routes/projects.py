"""Projects and their API tokens. Creating and deleting projects and managing tokens need the
admin token or an admin of the project's organization: a project token can use its project, not
mint or revoke tokens (403)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import (
    Moment,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUsage,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
)
from api.usecases import projects

router = APIRouter(prefix="/projects", tags=["projects"], responses=errors(401, 403, 422, 429))


@router.post("", status_code=201, response_model=ProjectPublic, responses=errors(403, 404, 413, 415))
async def create_project(*, principal: CurrentPrincipal, mutation: MutationDep, body: ProjectCreate) -> ProjectPublic:
    """Create a project: in an organization (by its admins and owners), or outside any (admin token)."""
    return await mutation.run(
        lambda conn: projects.create_project(conn, mutation.platform, principal, body), ProjectPublic
    )


@router.get("", response_model=ProjectsPublic)
async def read_projects(*, platform: PlatformDep, principal: CurrentPrincipal) -> ProjectsPublic:
    """The projects the caller sees: every one with the admin token, its own with a project token,
    its organizations' for a user."""
    async with platform.autocommit.connect() as conn:
        return await projects.list_projects(conn, principal)


@router.get("/{project_id}", response_model=ProjectPublic, responses=errors(404))
async def read_project(*, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID) -> ProjectPublic:
    """One project."""
    async with platform.autocommit.connect() as conn:
        return await projects.read_project(conn, principal, project_id)


@router.get("/{project_id}/usage", response_model=ProjectUsage, responses=errors(404))
async def read_usage(
    *, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID, since: Moment | None = None
) -> ProjectUsage:
    """What the project uses: its databases, their storage (from the data hosts' latest state
    reports) and database-hours since ``since`` (default: the first day of this month, UTC)."""
    async with platform.autocommit.connect() as conn:
        return await projects.project_usage(conn, principal, project_id, since or projects.month_start())


@router.delete("/{project_id}", response_model=ProjectPublic, responses=errors(403, 404, 409, 413, 415))
async def delete_project(*, principal: CurrentPrincipal, mutation: MutationDep, project_id: uuid.UUID) -> ProjectPublic:
    """Delete an empty project (409 while it holds databases) and revoke its tokens (admin token, or an
    admin of the project's organization)."""
    return await mutation.run(
        lambda conn: projects.delete_project(conn, mutation.platform, principal, project_id), ProjectPublic
    )


@router.post("/{project_id}/tokens", status_code=201, response_model=TokenCreated, responses=errors(403, 404, 413, 415))
async def create_token(
    *, principal: CurrentPrincipal, mutation: MutationDep, project_id: uuid.UUID, body: TokenCreate
) -> TokenCreated:
    """Create an API token scoped to one project (admin token, or an admin of the project's
    organization). The secret is shown once (a retry with
    the same Idempotency-Key within 24 h shows it again, from an encrypted record) and stored hashed."""
    return await mutation.run(
        lambda conn: projects.create_token(conn, mutation.platform, principal, project_id, body),
        TokenCreated,
        sealed=True,
    )


@router.get("/{project_id}/tokens", response_model=TokensPublic, responses=errors(403, 404))
async def read_tokens(*, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID) -> TokensPublic:
    """The project's tokens, revoked ones included, never their secrets (admin token, or an admin of
    the project's organization)."""
    async with platform.autocommit.connect() as conn:
        return await projects.list_tokens(conn, principal, project_id)


@router.delete("/{project_id}/tokens/{token_id}", response_model=TokenPublic, responses=errors(403, 404, 413, 415))
async def revoke_token(
    *, principal: CurrentPrincipal, mutation: MutationDep, project_id: uuid.UUID, token_id: uuid.UUID
) -> TokenPublic:
    """Revoke a token: the next request with it is a 401 (admin token, or an admin of the project's
    organization)."""
    return await mutation.run(
        lambda conn: projects.revoke_token(conn, mutation.platform, principal, project_id, token_id), TokenPublic
    )
