"""Projects and their API tokens."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import not_found
from api.models import ProjectPublic, TokenCreated
from api.platform import Platform
from api.principal import Principal
from infra.metadata.tables import TOKENS
from infra.secrets import token_digest
from producers.commands import project_event, record_event
from readmodel.tables import PROJECTS
from schemas.events import ApiTokenCreated, ProjectCreated


async def create_project(
    conn: AsyncConnection, platform: Platform, principal: Principal, name: str, plan: str
) -> ProjectPublic:
    event = project_event(ProjectCreated(name=name, plan=plan), project_id=uuid.uuid4(), actor=principal.actor)
    await record_event(conn, platform.subjects, event)
    return ProjectPublic(id=event.project_id, name=name, plan=plan, created_at=event.occurred_at)


async def create_token(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID, name: str
) -> TokenCreated:
    """A token scoped to one project; its secret is returned once and stored as a digest."""
    if (await conn.execute(sa.select(PROJECTS.c.id).where(PROJECTS.c.id == project_id))).first() is None:
        raise not_found("project")
    token_id, secret, now = uuid.uuid4(), secrets.token_urlsafe(32), datetime.now(UTC)
    await conn.execute(
        sa.insert(TOKENS).values(
            id=token_id, project_id=project_id, name=name, secret_digest=token_digest(secret), created_at=now
        )
    )
    event = project_event(ApiTokenCreated(token_id=token_id, name=name), project_id=project_id, actor=principal.actor)
    await record_event(conn, platform.subjects, event)
    return TokenCreated(
        id=token_id, project_id=project_id, name=name, token=f"pgp_{token_id.hex}_{secret}", created_at=now
    )
