"""Platform administration (admin token): what spans tenants or changes what they are entitled to."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from fastapi import APIRouter, Query

from api.deps import AdminPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import Email, MailboxPublic, MailPublic, PlanChange, ProjectPublic
from api.usecases import projects
from infra.metadata.tables import MAIL

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
    async with platform.engine.connect() as conn:
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
