"""Databases: create, list, read, credentials, delete, reset, rotate credentials."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import Accepted, Credentials, DatabaseCreate, DatabasePublic, DatabasesPublic, DeleteAccepted
from api.usecases import databases
from api.usecases.loading import database_public, load_database

router = APIRouter(prefix="/databases", tags=["databases"], responses=errors(401, 403, 422, 429))


@router.post("", status_code=202, response_model=Accepted, responses=errors(413, 415, 404, 409, 503))
async def create_database(*, principal: CurrentPrincipal, mutation: MutationDep, body: DatabaseCreate) -> Accepted:
    """Create a database; 202 with the operation that provisions it."""
    principal.check_project(body.project_id)
    return await mutation.run(
        lambda conn: databases.create_database(conn, mutation.platform, principal, body.project_id, body.name),
        Accepted,
    )


@router.get("", response_model=DatabasesPublic, responses=errors(404))
async def read_databases(
    *, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID | None = None
) -> DatabasesPublic:
    """List a project's databases, deleted ones included (without ``project_id``: those of every
    project the caller sees)."""
    projects = principal.listed(project_id)
    async with platform.autocommit.connect() as conn:
        return await databases.list_databases(conn, platform, projects)


@router.get("/{database_id}", response_model=DatabasePublic, responses=errors(404))
async def read_database(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> DatabasePublic:
    """Status and PgBouncer address of one database."""
    async with platform.autocommit.connect() as conn:
        return database_public(platform, await load_database(conn, database_id, principal))


@router.get("/{database_id}/credentials", response_model=Credentials, responses=errors(404))
async def read_credentials(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID, response: Response
) -> Credentials:
    """The connection URI with the current password (owner only; never cached, and audited)."""
    response.headers["Cache-Control"] = "no-store"
    async with platform.engine.begin() as conn:
        return await databases.read_credentials(conn, platform, principal, database_id)


@router.delete("/{database_id}", status_code=202, response_model=DeleteAccepted, responses=errors(413, 415, 404, 409))
async def delete_database(
    *, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID
) -> DeleteAccepted:
    """Delete a database and its role; 202 with the operation, and until when its backups stay."""
    return await mutation.run(
        lambda conn: databases.delete_database(conn, mutation.platform, principal, database_id), DeleteAccepted
    )


@router.post("/{database_id}/reset", status_code=202, response_model=Accepted, responses=errors(413, 415, 404, 409))
async def reset_database(*, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID) -> Accepted:
    """Drop all data; the name and credentials stay."""
    return await mutation.run(
        lambda conn: databases.reset_database(conn, mutation.platform, principal, database_id), Accepted
    )


@router.post(
    "/{database_id}/rotate-credentials", status_code=202, response_model=Accepted, responses=errors(413, 415, 404, 409)
)
async def rotate_credentials(*, principal: CurrentPrincipal, mutation: MutationDep, database_id: uuid.UUID) -> Accepted:
    """New password; the old one stops working once the operation succeeds."""
    return await mutation.run(
        lambda conn: databases.rotate_credentials(conn, mutation.platform, principal, database_id), Accepted
    )
