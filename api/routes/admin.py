"""Platform administration (the admin token, or a platform administrator's credential): what spans
tenants or changes what they are entitled to. Searches match a case-insensitive part of a name or
an email, or a whole id."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query

from api.deps import AdminPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import (
    DatabasesPublic,
    Email,
    MailboxPublic,
    MailPublic,
    OrganizationPublic,
    OrganizationSummaries,
    OrganizationSummary,
    PlanChange,
    ProjectPublic,
    ProjectsPublic,
    Suspension,
    UsersPublic,
)
from api.usecases import organizations, projects
from api.usecases.accounts import user_public
from api.usecases.loading import database_public
from api.usecases.projects import project_public
from infra.metadata.tables import MAIL, MEMBERSHIPS, ORGANIZATIONS, USERS
from readmodel.tables import DATABASES, PROJECTS

router = APIRouter(prefix="/admin", tags=["admin"], responses=errors(401, 403, 422, 429))


@router.post("/projects/{project_id}/plan", response_model=ProjectPublic, responses=errors(404, 409, 413, 415))
async def change_plan(
    *, principal: AdminPrincipal, mutation: MutationDep, project_id: uuid.UUID, body: PlanChange
) -> ProjectPublic:
    """Move a project to another plan; its limits (rate, quota, retention) change at once. A
    downgrade over a limit deletes nothing: new creations are refused until it is back under."""
    return await mutation.run(
        lambda conn: projects.change_plan(conn, mutation.platform, principal, project_id, body.plan), ProjectPublic
    )


@router.post(
    "/organizations/{organization_id}/plan", response_model=OrganizationPublic, responses=errors(404, 413, 415)
)
async def change_organization_plan(
    *, principal: AdminPrincipal, mutation: MutationDep, organization_id: uuid.UUID, body: PlanChange
) -> OrganizationPublic:
    """Move an organization, and every project it owns, to another plan; applied at once."""
    return await mutation.run(
        lambda conn: organizations.change_plan(conn, mutation.platform, principal, organization_id, body.plan),
        OrganizationPublic,
    )


@router.post(
    "/organizations/{organization_id}/suspend", response_model=OrganizationPublic, responses=errors(404, 413, 415)
)
async def suspend_organization(
    *, principal: AdminPrincipal, mutation: MutationDep, organization_id: uuid.UUID, body: Suspension
) -> OrganizationPublic:
    """Suspend an organization: each of its databases refuses logins and ends its sessions (an
    operation each, on its host); nothing is deleted and nothing new is created until resumed."""
    return await mutation.run(
        lambda conn: organizations.set_suspended(
            conn, mutation.platform, principal, organization_id, reason=body.reason
        ),
        OrganizationPublic,
    )


@router.post(
    "/organizations/{organization_id}/resume", response_model=OrganizationPublic, responses=errors(404, 413, 415)
)
async def resume_organization(
    *, principal: AdminPrincipal, mutation: MutationDep, organization_id: uuid.UUID
) -> OrganizationPublic:
    """Resume a suspended organization: its databases take logins again."""
    return await mutation.run(
        lambda conn: organizations.set_suspended(conn, mutation.platform, principal, organization_id, reason=None),
        OrganizationPublic,
    )


@router.get("/mail", response_model=MailboxPublic)
async def read_mail(
    *,
    platform: PlatformDep,
    principal: AdminPrincipal,
    recipient: Email | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> MailboxPublic:
    """Mail the platform has to send (invitations), newest first: what operators read on a platform
    without a mail server. It holds single-use links: admin only, never cached."""
    query = sa.select(MAIL).order_by(MAIL.c.created_at.desc()).limit(limit)
    if recipient is not None:
        query = query.where(MAIL.c.recipient == recipient)
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query)).all()
    data = [
        MailPublic(
            id=row.id,
            recipient=row.recipient,
            subject=row.subject,
            body=platform.box.decrypt(row.body_encrypted, context=f"mail:{row.recipient}"),
            created_at=row.created_at,
        )
        for row in rows
    ]
    return MailboxPublic(data=data, count=len(data))


NUL = "\x00"
Search = Annotated[str | None, Query(max_length=100, description="Part of a name or an email, or a whole id.")]
Limit = Annotated[int, Query(ge=1, le=500)]


def _matches(query: str | None, *columns: Any) -> Any:
    """Whether any column holds ``query`` (ignoring case), or the id is it."""
    if not query:
        return sa.true()
    if NUL in query:  # PostgreSQL text never holds one (and refuses it as a parameter)
        return sa.false()
    found = [sa.func.strpos(sa.func.lower(sa.cast(c, sa.String)), query.lower()) > 0 for c in columns]
    return sa.or_(*found)


@router.get("/organizations", response_model=OrganizationSummaries)
async def search_organizations(
    *, platform: PlatformDep, principal: AdminPrincipal, q: Search = None, limit: Limit = 100
) -> OrganizationSummaries:
    """Organizations across the platform, with their member and project counts."""
    members = sa.select(sa.func.count()).where(MEMBERSHIPS.c.organization_id == ORGANIZATIONS.c.id).scalar_subquery()
    owned = (
        sa.select(sa.func.count())
        .where(PROJECTS.c.organization_id == ORGANIZATIONS.c.id, PROJECTS.c.deleted_at.is_(None))
        .scalar_subquery()
    )
    query = (
        sa.select(ORGANIZATIONS, members.label("members"), owned.label("projects"))
        .where(_matches(q, ORGANIZATIONS.c.name, ORGANIZATIONS.c.id))
        .order_by(ORGANIZATIONS.c.created_at)
        .limit(limit)
    )
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query)).all()
    data = [OrganizationSummary.model_validate(dict(row._mapping)) for row in rows]
    return OrganizationSummaries(data=data, count=len(data))


@router.get("/users", response_model=UsersPublic)
async def search_users(
    *, platform: PlatformDep, principal: AdminPrincipal, q: Search = None, limit: Limit = 100
) -> UsersPublic:
    query = (
        sa.select(USERS)
        .where(_matches(q, USERS.c.email, USERS.c.name, USERS.c.id))
        .order_by(USERS.c.created_at)
        .limit(limit)
    )
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query)).all()
    return UsersPublic(data=[user_public(row) for row in rows], count=len(rows))


@router.get("/projects", response_model=ProjectsPublic)
async def search_projects(
    *,
    platform: PlatformDep,
    principal: AdminPrincipal,
    q: Search = None,
    organization_id: uuid.UUID | None = None,
    limit: Limit = 100,
) -> ProjectsPublic:
    """Projects across tenants, deleted ones left out."""
    query = sa.select(PROJECTS).where(PROJECTS.c.deleted_at.is_(None), _matches(q, PROJECTS.c.name, PROJECTS.c.id))
    if organization_id is not None:
        query = query.where(PROJECTS.c.organization_id == organization_id)
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query.order_by(PROJECTS.c.created_at).limit(limit))).all()
    return ProjectsPublic(data=[project_public(row) for row in rows], count=len(rows))


@router.get("/databases", response_model=DatabasesPublic)
async def search_databases(
    *,
    platform: PlatformDep,
    principal: AdminPrincipal,
    q: Search = None,
    project_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(max_length=30)] = None,
    limit: Limit = 100,
) -> DatabasesPublic:
    """Databases across tenants: by part of their name, their id or their PostgreSQL name."""
    query = sa.select(DATABASES).where(_matches(q, DATABASES.c.name, DATABASES.c.id, DATABASES.c.dbname))
    if project_id is not None:
        query = query.where(DATABASES.c.project_id == project_id)
    if status is not None:
        query = query.where(DATABASES.c.status == status if NUL not in status else sa.false())
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query.order_by(DATABASES.c.created_at).limit(limit))).all()
    return DatabasesPublic(data=[database_public(platform, row) for row in rows], count=len(rows))
