"""Projects and their API tokens.

A project is deleted only once it holds no live database (delete those first: each deletion is
an operation with its own saga); deleting it revokes its tokens in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import (
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUsage,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
    Usage,
)
from api.platform import Platform
from api.principal import Principal
from infra.metadata.tables import ORGANIZATIONS, TOKENS
from infra.secrets import token_digest
from infra.tokens import new_token
from producers.commands import project_event
from readmodel import usage
from readmodel.tables import DATABASES, GONE, PROJECTS, projects_with_plan
from schemas.events import ApiTokenCreated, ApiTokenRevoked, ProjectCreated, ProjectDeleted, ProjectPlanChanged


def project_public(row: Any) -> ProjectPublic:
    return ProjectPublic(
        id=row.id, name=row.name, plan=row.plan, organization_id=row.organization_id, created_at=row.created_at
    )


def token_public(row: Any) -> TokenPublic:
    return TokenPublic(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        scopes=row.scopes,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


async def load_project(
    conn: AsyncConnection, principal: Principal, project_id: uuid.UUID, *, for_update: bool = False
) -> Any:
    """A live project the caller sees; a deleted one, or another tenant's, is not found."""
    principal.check_project(project_id)
    query = projects_with_plan().where(PROJECTS.c.id == project_id, PROJECTS.c.deleted_at.is_(None))
    row = (await conn.execute(query.with_for_update(of=PROJECTS) if for_update else query)).first()
    if row is None:
        raise not_found("project")
    return row


def check_manages(principal: Principal, project: Any) -> None:
    """Creating and deleting projects and managing their tokens: the platform admin, or an admin of
    the organisation that owns the project."""
    if principal.is_admin:
        return
    if principal.user_id is None or project.organization_id is None:
        raise ApiError(403, "forbidden", "this needs the admin token or an admin of the project's organization")
    principal.check_role(project.organization_id, "admin")


async def create_project(
    conn: AsyncConnection, platform: Platform, principal: Principal, request: ProjectCreate
) -> ProjectPublic:
    organization_id = request.organization_id
    if organization_id is None and not principal.is_admin:
        raise ApiError(403, "forbidden", "a user's project belongs to an organization: give organization_id")
    plan = request.plan
    if organization_id is not None:
        principal.check_role(organization_id, "admin")
        owner = (
            await conn.execute(
                sa.select(ORGANIZATIONS.c.plan).where(ORGANIZATIONS.c.id == organization_id).with_for_update()
            )
        ).first()
        if owner is None:
            raise not_found("organization")
        plan = owner.plan  # an organization's projects have its plan
    created = ProjectCreated(name=request.name, plan=plan, organization_id=organization_id)
    event = project_event(created, project_id=uuid.uuid4(), actor=principal.actor)
    await platform.outbox.event(conn, event)
    return ProjectPublic(
        id=event.project_id,
        name=request.name,
        plan=plan,
        organization_id=organization_id,
        created_at=event.occurred_at,
    )


async def list_projects(conn: AsyncConnection, principal: Principal) -> ProjectsPublic:
    query = projects_with_plan().where(PROJECTS.c.deleted_at.is_(None)).order_by(PROJECTS.c.created_at)
    if principal.grants is not None:
        query = query.where(PROJECTS.c.id.in_(principal.grants))
    rows = (await conn.execute(query)).all()
    return ProjectsPublic(data=[project_public(r) for r in rows], count=len(rows))


async def read_project(conn: AsyncConnection, principal: Principal, project_id: uuid.UUID) -> ProjectPublic:
    return project_public(await load_project(conn, principal, project_id))


async def change_plan(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID, plan: str
) -> ProjectPublic:
    """Move the project to ``plan`` now. A downgrade over a limit deletes nothing: what is over it
    stays, and new creations are refused (409) until the project is back under it."""
    project = await load_project(conn, principal, project_id, for_update=True)
    if project.organization_id is not None:
        raise ApiError(
            409, "plan_of_organization", "the project has its organization's plan: change the organization's"
        )
    if project.plan != plan:
        changed = ProjectPlanChanged(plan=plan, previous=project.plan)
        await platform.outbox.event(conn, project_event(changed, project_id=project_id, actor=principal.actor))
    return project_public(await load_project(conn, principal, project_id))


async def delete_project(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID
) -> ProjectPublic:
    project = await load_project(conn, principal, project_id, for_update=True)
    check_manages(principal, project)
    live = (
        await conn.execute(
            sa.select(sa.func.count()).where(DATABASES.c.project_id == project_id, DATABASES.c.status.not_in(GONE))
        )
    ).scalar_one()
    if live:
        raise ApiError(409, "project_not_empty", f"the project still holds {live} databases: delete them first")
    await conn.execute(
        sa.update(TOKENS)
        .where(TOKENS.c.project_id == project_id, TOKENS.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    event = project_event(ProjectDeleted(name=project.name), project_id=project_id, actor=principal.actor)
    await platform.outbox.event(conn, event)
    return project_public(project)


async def project_usage(
    conn: AsyncConnection, principal: Principal, project_id: uuid.UUID, since: datetime
) -> ProjectUsage:
    """What the project uses (``measure``)."""
    await load_project(conn, principal, project_id)
    return ProjectUsage(project_id=project_id, **(await measure(conn, [project_id], since)).model_dump())


def month_start() -> datetime:
    """The first moment of this month, UTC: where a usage period starts by default."""
    return datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def measure(conn: AsyncConnection, projects: Collection[uuid.UUID], since: datetime) -> Usage:
    """What these projects use: databases and their storage (from the data hosts' latest reports),
    and database-hours since ``since``."""
    count, size, reported_at = await usage.storage(conn, projects)
    seconds = await usage.database_seconds(conn, projects, since)
    return Usage(
        since=since,
        databases=count,
        storage_bytes=size,
        reported_at=reported_at,
        database_hours=round(seconds / 3600, 3),
    )


async def create_token(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID, request: TokenCreate
) -> TokenCreated:
    """A token scoped to one project; its secret is returned once and stored as a digest."""
    check_manages(principal, await load_project(conn, principal, project_id))
    token_id, now = uuid.uuid4(), datetime.now(UTC)
    token, secret = new_token(token_id)
    expires = now + timedelta(days=request.expires_in_days) if request.expires_in_days else None
    await conn.execute(
        sa.insert(TOKENS).values(
            id=token_id,
            project_id=project_id,
            name=request.name,
            secret_digest=token_digest(secret),
            created_at=now,
            expires_at=expires,
            scopes=request.scopes,
        )
    )
    event = ApiTokenCreated(token_id=token_id, name=request.name)
    await platform.outbox.event(conn, project_event(event, project_id=project_id, actor=principal.actor))
    row = (await conn.execute(sa.select(TOKENS).where(TOKENS.c.id == token_id))).one()
    return TokenCreated(**token_public(row).model_dump(), token=token)


async def list_tokens(conn: AsyncConnection, principal: Principal, project_id: uuid.UUID) -> TokensPublic:
    check_manages(principal, await load_project(conn, principal, project_id))
    rows = (
        await conn.execute(sa.select(TOKENS).where(TOKENS.c.project_id == project_id).order_by(TOKENS.c.created_at))
    ).all()
    return TokensPublic(data=[token_public(r) for r in rows], count=len(rows))


async def revoke_token(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID, token_id: uuid.UUID
) -> TokenPublic:
    """The next request with the token is a 401; revoking twice changes nothing more."""
    check_manages(principal, await load_project(conn, principal, project_id))
    row = (
        await conn.execute(
            sa.select(TOKENS).where(TOKENS.c.id == token_id, TOKENS.c.project_id == project_id).with_for_update()
        )
    ).first()
    if row is None:
        raise not_found("token")
    if row.revoked_at is None:
        await conn.execute(sa.update(TOKENS).where(TOKENS.c.id == token_id).values(revoked_at=datetime.now(UTC)))
        event = ApiTokenRevoked(token_id=token_id, name=row.name)
        await platform.outbox.event(conn, project_event(event, project_id=project_id, actor=principal.actor))
        row = (await conn.execute(sa.select(TOKENS).where(TOKENS.c.id == token_id))).one()
    return token_public(row)
