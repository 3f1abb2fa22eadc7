"""The audit log: who did what, when, with which outcome."""

from __future__ import annotations

import uuid

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
    limit: int = Query(default=100, ge=1, le=1000),
) -> AuditLogPublic:
    """A project's audit entries, newest first (the admin token without ``project_id``: every project's)."""
    project_id = project_id or principal.project_id
    query = sa.select(AUDIT).order_by(AUDIT.c.occurred_at.desc()).limit(limit)
    if project_id is not None:
        principal.check_project(project_id)
        query = query.where(AUDIT.c.project_id == project_id)
    async with platform.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    entries = [AuditEntryPublic.model_validate(dict(r._mapping)) for r in rows]
    return AuditLogPublic(data=entries, count=len(entries))
