"""Requests per minute, per token, per project and per organization (a user: per user and per
session or token), from the plan; counted in the
metadata database so every API process shares them.

Each key has a fixed one-minute window that starts with its first request; a request past the
plan's rate in it is a 429 with ``Retry-After``. Every answer to a project token carries the
``RateLimit-Policy`` and ``RateLimit`` fields (IETF draft-ietf-httpapi-ratelimit-headers): the
quota, what is left, and the seconds until it is whole again. The admin token is not limited;
health and metrics need no token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from infra.metadata.tables import RATE_WINDOWS

WINDOW = timedelta(minutes=1)
POLICY = "per-minute"


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    reset_seconds: int

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    def headers(self) -> dict[str, str]:
        remaining = max(0, self.limit - self.used)
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.limit};w={int(WINDOW.total_seconds())}',
            "RateLimit": f'"{POLICY}";r={remaining};t={self.reset_seconds}',
        }


async def take(conn: AsyncConnection, keys: Sequence[str], limit: int) -> Quota:
    """Count one request against each key (``token:<id>`` and ``project:<id>``, or ``user:<id>`` and
    its session or token); the fullest decides."""
    now = datetime.now(UTC)
    statement = insert(RATE_WINDOWS).values([{"key": key, "window_started": now, "used": 1} for key in sorted(keys)])
    fresh = RATE_WINDOWS.c.window_started <= now - WINDOW
    counted = statement.on_conflict_do_update(
        index_elements=[RATE_WINDOWS.c.key],
        set_={
            "window_started": sa.case((fresh, now), else_=RATE_WINDOWS.c.window_started),
            "used": sa.case((fresh, 1), else_=RATE_WINDOWS.c.used + 1),
        },
    ).returning(RATE_WINDOWS.c.window_started, RATE_WINDOWS.c.used)
    fullest = max((await conn.execute(counted)).all(), key=lambda row: row.used)
    reset = math.ceil((fullest.window_started + WINDOW - now).total_seconds())
    return Quota(limit=limit, used=fullest.used, reset_seconds=max(reset, 0))


def refuse(quota: Quota) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"more than {quota.limit} requests a minute for this plan: try again in {quota.reset_seconds} s",
        headers={"Retry-After": str(quota.reset_seconds)} | quota.headers(),
    )
