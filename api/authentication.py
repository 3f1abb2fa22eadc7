"""Who a bearer token is, and throttling of wrong ones.

A client address that presented more than ``auth_failures_per_minute`` wrong tokens in a minute
gets 429 with ``Retry-After`` until the minute is over, whatever it presents: guessing is as slow
as the limit. A token is refused once revoked or past its expiry; its last use is recorded (at
most once a minute, so reads stay reads).
"""

from __future__ import annotations

import hmac
import math
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.platform import Platform
from api.principal import Principal
from infra.metadata.tables import AUTH_FAILURES, TOKENS
from infra.secrets import token_digest
from infra.tokens import parse_token

WINDOW = timedelta(minutes=1)
LAST_USED_EVERY = timedelta(minutes=1)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


async def authenticate(platform: Platform, token: str, client: str) -> Principal:
    async with platform.engine.begin() as conn:
        await _refuse_if_throttled(conn, client, platform.settings.auth_failures_per_minute)
        principal = await _verify(conn, platform, token)
        if principal is None:
            await _record_failure(conn, client)
    if principal is None:
        raise unauthorized()
    return principal


async def reverify(platform: Platform, token: str) -> Principal | None:
    """The token's principal now, or ``None`` once it is revoked or expired (long-lived responses)."""
    async with platform.engine.begin() as conn:
        return await _verify(conn, platform, token)


async def _verify(conn: AsyncConnection, platform: Platform, token: str) -> Principal | None:
    admin = platform.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Principal("admin", None)
    parsed = parse_token(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    row = (
        await conn.execute(
            sa.select(TOKENS.c.project_id, TOKENS.c.secret_digest, TOKENS.c.expires_at, TOKENS.c.last_used_at).where(
                TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None)
            )
        )
    ).first()
    now = datetime.now(UTC)
    if row is None or not hmac.compare_digest(row.secret_digest, token_digest(secret)):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        await conn.execute(sa.update(TOKENS).where(TOKENS.c.id == token_id).values(last_used_at=now))
    return Principal(f"token:{token_id}", row.project_id)


async def _refuse_if_throttled(conn: AsyncConnection, client: str, limit: int) -> None:
    row = (
        await conn.execute(
            sa.select(AUTH_FAILURES.c.window_started, AUTH_FAILURES.c.failures).where(AUTH_FAILURES.c.client == client)
        )
    ).first()
    if row is None or row.failures < limit:
        return
    left = (row.window_started + WINDOW - datetime.now(UTC)).total_seconds()
    if left > 0:
        raise ApiError(
            429,
            "too_many_failed_attempts",
            f"too many wrong tokens from this address: try again in {math.ceil(left)} s",
            headers={"Retry-After": str(math.ceil(left))},
        )


async def _record_failure(conn: AsyncConnection, client: str) -> None:
    now = datetime.now(UTC)
    fresh = AUTH_FAILURES.c.window_started <= now - WINDOW
    await conn.execute(
        insert(AUTH_FAILURES)
        .values(client=client, window_started=now, failures=1)
        .on_conflict_do_update(
            index_elements=[AUTH_FAILURES.c.client],
            set_={
                "window_started": sa.case((fresh, now), else_=AUTH_FAILURES.c.window_started),
                "failures": sa.case((fresh, 1), else_=AUTH_FAILURES.c.failures + 1),
            },
        )
    )
