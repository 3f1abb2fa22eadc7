"""One transaction per mutation: idempotency check, the change, the stored response; then
the outbox is drained so the messages leave right away."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import Platform, Principal
from api.idempotency import request_digest, store_response, stored_response

log = logging.getLogger("pgplane.api")


async def mutate(
    platform: Platform,
    principal: Principal,
    *,
    key: str | None,
    method: str,
    path: str,
    body: Any,
    status_code: int,
    change: Callable[[AsyncConnection], Awaitable[BaseModel]],
) -> JSONResponse:
    digest = request_digest(method, path, body)
    ttl = timedelta(hours=platform.settings.idempotency_ttl_hours)
    async with platform.engine.begin() as conn:
        stored = None
        if key is not None:
            stored = await stored_response(conn, principal=principal.actor, key=key, digest=digest, ttl=ttl)
        if stored is None:
            result = (await change(conn)).model_dump(mode="json")
            if key is not None:
                await store_response(
                    conn, principal=principal.actor, key=key, digest=digest, status_code=status_code, body=result
                )
    platform.faults.crash_point("api.accepted")
    try:
        await platform.relay.drain()
    except Exception:
        log.exception("publishing after accept failed; the outbox relay will retry")
    return stored if stored is not None else JSONResponse(result, status_code=status_code)
