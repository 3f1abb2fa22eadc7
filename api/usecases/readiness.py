"""Is the platform able to do its work: NATS and the metadata database answer, the projector and
every data host's agent sent a heartbeat lately. The projector's lag is reported with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import sqlalchemy as sa

from api.models import ComponentReadiness, Readiness
from api.platform import Platform
from infra.heartbeats import STALE_SECONDS
from schemas.subjects import Subjects

T = TypeVar("T")
CHECK_SECONDS = 2.0


async def _within(work: Awaitable[T]) -> T:
    async with asyncio.timeout(CHECK_SECONDS):
        return await work


def _down(exc: BaseException) -> ComponentReadiness:
    return ComponentReadiness(ok=False, detail=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


async def readiness(platform: Platform) -> Readiness:
    components: dict[str, ComponentReadiness] = {}
    try:
        async with platform.autocommit.connect() as conn:
            await _within(conn.execute(sa.text("SELECT 1")))
        components["metadata"] = ComponentReadiness(ok=True, detail="answers")
    except Exception as exc:
        components["metadata"] = _down(exc)
    try:
        beats = await _within(platform.heartbeats.read())
        subjects = Subjects(namespace=platform.settings.namespace)
        info = await _within(platform.bus.jetstream().consumer_info(subjects.events_stream, subjects.projector_durable))
        components["nats"] = ComponentReadiness(ok=True, detail="answers")
    except Exception as exc:
        components["nats"] = _down(exc)
        return Readiness(ready=False, components=components)
    now = datetime.now(UTC)
    lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
    components["projector"] = _heartbeat(beats.get("projector"), now, f"{lag} events behind")
    for host in sorted(
        {key.removeprefix("agent.") for key in beats if key.startswith("agent.")} | {platform.settings.host_id}
    ):
        components[f"agent:{host}"] = _heartbeat(beats.get(f"agent.{host}"), now, "")
    return Readiness(ready=all(c.ok for c in components.values()), components=components)


def _heartbeat(last: datetime | None, now: datetime, more: str) -> ComponentReadiness:
    if last is None:
        return ComponentReadiness(ok=False, detail="never sent a heartbeat")
    age = (now - last).total_seconds()
    detail = f"last heartbeat {age:.0f} s ago" + (f", {more}" if more else "")
    return ComponentReadiness(ok=age <= STALE_SECONDS, detail=detail)
