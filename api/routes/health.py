"""Liveness, readiness and Prometheus metrics (outside /api/v1)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel

from api.deps import AdminPrincipal, PlatformDep
from api.errors import errors
from api.models import Readiness
from api.usecases.readiness import readiness
from infra.metadata.tables import OUTBOX, WEBHOOK_DELIVERIES
from readmodel.tables import AUDIT, DRIFTS, OPERATIONS, DriftStatus
from schemas.subjects import Subjects

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str = "ok"


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """Liveness: the API process answers (what it depends on is ``/readyz``'s business)."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready."}})
async def readyz(*, platform: PlatformDep, response: Response) -> Readiness:
    """Readiness: NATS, the metadata database, the projector (and its lag) and every agent's heartbeat."""
    found = await readiness(platform)
    if not found.ready:
        response.status_code = 503
    return found


METRICS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}
}


@router.get("/metrics", response_class=Response, responses=METRICS | errors(401, 403, 429))
async def metrics(*, platform: PlatformDep, principal: AdminPrincipal) -> Response:
    """Operations by kind and status, messages waiting in the outbox, webhook deliveries waiting,
    dead letters, open drifts (admin token: they span tenants), and this API process's requests by
    route and status."""
    registry = CollectorRegistry()
    dead = Gauge("pgplane_dead_letters", "Commands in the dead letters (pgplane ops dead-letters)", registry=registry)
    drifts = Gauge(
        "pgplane_drifts_open", "Open differences between data hosts and the read model", ["kind"], registry=registry
    )
    subjects = Subjects(namespace=platform.settings.namespace)
    dead.set((await platform.bus.jetstream().stream_info(subjects.dead_letter_stream)).state.messages)
    deliveries = Gauge("pgplane_webhook_deliveries_pending", "Webhook deliveries not yet made", registry=registry)
    operations = Gauge("pgplane_operations", "Operations by kind and status", ["kind", "status"], registry=registry)
    pending = Gauge("pgplane_outbox_pending", "Accepted messages not yet published", registry=registry)
    rejected = Gauge(
        "pgplane_commands_rejected", "Commands agents refused (unsigned, forged, malformed)", registry=registry
    )
    async with platform.autocommit.connect() as conn:
        counts = await conn.execute(
            sa.select(OPERATIONS.c.kind, OPERATIONS.c.status, sa.func.count()).group_by(
                OPERATIONS.c.kind, OPERATIONS.c.status
            )
        )
        for kind, status, count in counts:
            operations.labels(kind, status).set(count)
        pending.set(
            (await conn.execute(sa.select(sa.func.count()).where(OUTBOX.c.published_at.is_(None)))).scalar_one()
        )
        rejected.set(
            (await conn.execute(sa.select(sa.func.count()).where(AUDIT.c.action == "command.rejected"))).scalar_one()
        )
        waiting = sa.select(sa.func.count()).where(WEBHOOK_DELIVERIES.c.status == "pending")
        deliveries.set((await conn.execute(waiting)).scalar_one())
        open_drifts = sa.select(DRIFTS.c.kind, sa.func.count()).where(DRIFTS.c.status == DriftStatus.OPEN.value)
        for kind, count in await conn.execute(open_drifts.group_by(DRIFTS.c.kind)):
            drifts.labels(kind).set(count)
    return Response(generate_latest(registry) + generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
