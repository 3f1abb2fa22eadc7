"""Idempotency keys: same key and same request → the stored response; another request → 422.

Requests with the same key are serialized by a transaction-scoped advisory lock, so a
concurrent retry waits for the first and then sees its stored response.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from infra.metadata.tables import IDEMPOTENCY


def request_digest(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def stored_response(
    conn: AsyncConnection, *, principal: str, key: str, digest: str, ttl: timedelta
) -> dict[str, Any] | None:
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{principal}\n{key}"))))
    row = (
        await conn.execute(
            sa.select(IDEMPOTENCY).where(
                IDEMPOTENCY.c.principal == principal,
                IDEMPOTENCY.c.key == key,
                IDEMPOTENCY.c.created_at > datetime.now(UTC) - ttl,
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_digest != digest:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request")
    response: dict[str, Any] = row.response
    return response


async def store_response(
    conn: AsyncConnection, *, principal: str, key: str, digest: str, status_code: int, body: dict[str, Any]
) -> None:
    values = {"request_digest": digest, "status_code": status_code, "response": body, "created_at": datetime.now(UTC)}
    await conn.execute(
        insert(IDEMPOTENCY)
        .values(principal=principal, key=key, **values)
        .on_conflict_do_update(index_elements=[IDEMPOTENCY.c.principal, IDEMPOTENCY.c.key], set_=values)
    )
