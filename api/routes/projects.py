"""Projects and their API tokens."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import AdminPrincipal, CurrentPrincipal, IdempotencyKey, PlatformDep
from api.errors import ApiError, not_found
from api.models import ProjectCreate, ProjectPublic, TokenCreate, TokenCreated
from api.mutations import mutate
from infra.metadata.tables import TOKENS
from infra.secrets import token_digest
from producers.commands import project_event, record_event
from readmodel.tables import PROJECTS
from schemas.events import ApiTokenCreated, ProjectCreated

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectPublic)
async def create_project(
    *, platform: PlatformDep, principal: AdminPrincipal, body: ProjectCreate, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Create a project (admin token)."""

    async def change(conn: AsyncConnection) -> ProjectPublic:
        event = project_event(
            ProjectCreated(name=body.name, plan=body.plan), project_id=uuid.uuid4(), actor=principal.actor
        )
        await record_event(conn, platform.subjects, event)
        return ProjectPublic(id=event.project_id, name=body.name, plan=body.plan, created_at=event.occurred_at)

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path="/projects",
        body=body.model_dump(mode="json"),
        status_code=201,
        change=change,
    )


@router.post("/{project_id}/tokens", status_code=201, response_model=TokenCreated)
async def create_token(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: TokenCreate,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create an API token scoped to one project; the secret is shown once and stored hashed."""
    principal.check_project(project_id)
    if idempotency_key is not None:
        raise ApiError(422, "idempotency_not_supported", "token creation shows its secret once and cannot be replayed")

    async def change(conn: AsyncConnection) -> TokenCreated:
        if (await conn.execute(sa.select(PROJECTS.c.id).where(PROJECTS.c.id == project_id))).first() is None:
            raise not_found("project")
        token_id, secret, now = uuid.uuid4(), secrets.token_urlsafe(32), datetime.now(UTC)
        await conn.execute(
            sa.insert(TOKENS).values(
                id=token_id, project_id=project_id, name=body.name, secret_digest=token_digest(secret), created_at=now
            )
        )
        event = project_event(
            ApiTokenCreated(token_id=token_id, name=body.name), project_id=project_id, actor=principal.actor
        )
        await record_event(conn, platform.subjects, event)
        return TokenCreated(
            id=token_id, project_id=project_id, name=body.name, token=f"pgp_{token_id.hex}_{secret}", created_at=now
        )

    return await mutate(
        platform,
        principal,
        key=None,
        method="POST",
        path=f"/projects/{project_id}/tokens",
        body=body.model_dump(mode="json"),
        status_code=201,
        change=change,
    )
