"""The audit log: who did what, when, with which outcome."""

from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, PlatformDep
from api.errors import errors
from api.models import AuditEntryPublic, AuditLogPublic
from readmodel.tables import AUDIT

router = APIRouter(prefix="/audit-log", tags=["audit"], responses=errors(401, 403, 422, 429))


@router.get("", response_model=AuditLogPublic, responses=errors(404))
async def read_audit_log(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID | None = None,
    organization_id: Annotated[
        uuid.UUID | None,
        Query(description="An organization's own entries: members, roles, invitations (its admins)."),
    ] = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> AuditLogPublic:
    """A project's audit entries, newest first (without ``project_id``: those of every project the
    caller sees)."""
    query = sa.select(AUDIT).order_by(AUDIT.c.occurred_at.desc()).limit(limit)
    if organization_id is not None:
        principal.check_role(organization_id, "admin")
        projects: frozenset[uuid.UUID] | None = frozenset({organization_id})
    else:
        projects = principal.listed(project_id)
    if projects is not None:
        query = query.where(AUDIT.c.project_id.in_(projects))
    async with platform.autocommit.connect() as conn:
        rows = (await conn.execute(query)).all()
    entries = [AuditEntryPublic.model_validate(dict(r._mapping)) for r in rows]
    return AuditLogPublic(data=entries, count=len(entries))
