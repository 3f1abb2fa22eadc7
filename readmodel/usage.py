"""What projects use, from the read model: the time their databases existed (what billing meters)
and their storage (from the data hosts' latest state reports)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from readmodel.tables import DATABASES, GONE, HOST_STATES, DatabaseStatus


async def database_seconds(
    conn: AsyncConnection, projects: Collection[uuid.UUID], since: datetime, until: datetime | None = None
) -> float:
    """Seconds the projects' databases existed within ``[since, until)`` (``until``: now), summed;
    a create that failed left nothing and counts nothing."""
    until = until or datetime.now(UTC)
    start = sa.func.greatest(DATABASES.c.created_at, since)
    end = sa.func.least(sa.func.coalesce(DATABASES.c.deleted_at, until), until)
    seconds = sa.func.greatest(sa.extract("epoch", end - start), 0)
    lived = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(seconds), 0)).where(
                DATABASES.c.project_id.in_(projects),
                DATABASES.c.status != DatabaseStatus.FAILED.value,
                DATABASES.c.created_at < until,
                sa.or_(DATABASES.c.deleted_at.is_(None), DATABASES.c.deleted_at > since),
            )
        )
    ).scalar_one()
    return float(lived)


async def storage(conn: AsyncConnection, projects: Collection[uuid.UUID]) -> tuple[int, int, datetime | None]:
    """(live databases, their bytes on their hosts, the oldest report those bytes come from)."""
    live = sa.and_(DATABASES.c.project_id.in_(projects), DATABASES.c.status.not_in(GONE))
    count = (await conn.execute(sa.select(sa.func.count()).where(live))).scalar_one()
    reported = (
        sa.func.jsonb_to_recordset(HOST_STATES.c.databases)
        .table_valued(sa.column("dbname", sa.String), sa.column("size_bytes", sa.BigInteger))
        .render_derived(with_types=True)
    )  # jsonb_to_recordset needs its column types
    size, oldest = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(reported.c.size_bytes), 0), sa.func.min(HOST_STATES.c.reported_at))
            .select_from(HOST_STATES)
            .join(reported, sa.true())
            .join(
                DATABASES,
                sa.and_(DATABASES.c.dbname == reported.c.dbname, DATABASES.c.host_id == HOST_STATES.c.host_id),
            )
            .where(live)
        )
    ).one()
    return int(count), int(size), oldest
