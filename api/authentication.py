"""Who a bearer token is, throttling of wrong ones, and the plan's request rate (``api.rate_limits``).

A client address that presented more than ``auth_failures_per_minute`` wrong tokens in a minute
gets 429 with ``Retry-After`` until the minute is over, whatever it presents: guessing is as slow
as the limit. A token is refused once revoked or past its expiry; its last use is recorded (at
most once a minute, so reads stay reads).
"""

from __future__ import annotations

import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.platform import Platform
from api.principal import Principal
from api.rate_limits import Quota, refuse, take
from infra.metadata.tables import AUTH_FAILURES, TOKENS
from infra.plans import entitlements
from infra.secrets import token_digest
from infra.tokens import parse_token
from readmodel.tables import PROJECTS

WINDOW = timedelta(minutes=1)
LAST_USED_EVERY = timedelta(minutes=1)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Verified:
    principal: Principal
    token: tuple[uuid.UUID, uuid.UUID, str] | None = None
    """A project token's id, its project and the project's plan (``None``: the admin token, which
    no rate limits)."""


async def authenticate(platform: Platform, token: str, client: str) -> tuple[Principal, Quota | None]:
    """The caller, and what is left of its plan's request rate (counted, shared by every API process)."""
    quota = None
    async with platform.engine.begin() as conn:
        await _refuse_if_throttled(conn, client, platform.settings.auth_failures_per_minute)
        verified = await _verify(conn, platform, token)
        if verified is None:
            await _record_failure(conn, client)
        elif verified.token is not None:
            token_id, project_id, plan = verified.token
            quota = await take(conn, token_id, project_id, entitlements(platform.settings, plan).requests_per_minute)
    if verified is None:
        raise unauthorized()
    if quota is not None and quota.exceeded:
        raise refuse(quota)
    return verified.principal, quota


async def reverify(platform: Platform, token: str) -> Principal | None:
    """The token's principal now, or ``None`` once it is revoked or expired (long-lived responses)."""
    async with platform.engine.begin() as conn:
        verified = await _verify(conn, platform, token)
    return verified.principal if verified else None


async def _verify(conn: AsyncConnection, platform: Platform, token: str) -> Verified | None:
    admin = platform.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Verified(Principal("admin", None))
    parsed = parse_token(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    row = (
        await conn.execute(
            sa.select(
                TOKENS.c.project_id,
                TOKENS.c.secret_digest,
                TOKENS.c.expires_at,
                TOKENS.c.last_used_at,
                TOKENS.c.scopes,
                PROJECTS.c.plan,
            )
            .join(PROJECTS, PROJECTS.c.id == TOKENS.c.project_id)
            .where(TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None))
        )
    ).first()
    now = datetime.now(UTC)
    if row is None or not hmac.compare_digest(row.secret_digest, token_digest(secret)):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        await conn.execute(sa.update(TOKENS).where(TOKENS.c.id == token_id).values(last_used_at=now))
    principal = Principal(f"token:{token_id}", row.project_id, frozenset(row.scopes))
    return Verified(principal, (token_id, row.project_id, str(row.plan)))


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
