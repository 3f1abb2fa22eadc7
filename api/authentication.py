"""Who a credential is, throttling of wrong ones, and the plan's request rate (``api.rate_limits``).

A credential is a bearer token (the admin token, a project token or a user's personal token, all
``pgp_…`` but the first) or a browser's session cookie. The check is the same for every kind: a
revoked or expired one is refused, its last use is recorded (at most once a minute, so reads stay
reads). A client address that presented more than ``auth_failures_per_minute`` wrong credentials
in a minute gets 429 with ``Retry-After`` until the minute is over, whatever it presents: guessing
is as slow as the limit.
"""

from __future__ import annotations

import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.platform import Platform
from api.principal import ROLE_SCOPES, SCOPES, Principal, up_to
from api.rate_limits import Quota, refuse, take
from infra.metadata.tables import AUTH_FAILURES, MEMBERSHIPS, SESSIONS, TOKENS, USERS
from infra.plans import entitlements
from infra.secrets import token_digest
from infra.sessions import parse_session
from infra.tokens import parse_token
from readmodel.tables import PROJECTS, project_plan

WINDOW = timedelta(minutes=1)
LAST_USED_EVERY = timedelta(minutes=1)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Credential:
    kind: Literal["bearer", "session"]
    value: str


@dataclass(frozen=True)
class Verified:
    principal: Principal
    rate_keys: tuple[str, ...] = ()
    """What the request counts against (none: the admin, whom no rate limits)."""
    plans: tuple[str, ...] = ()
    """The plans of the projects it may use: the best one sets the rate."""


async def authenticate(platform: Platform, credential: Credential, client: str) -> tuple[Principal, Quota | None]:
    """The caller, and what is left of its plan's request rate (counted, shared by every API process).
    No transaction: every write here is one statement, atomic on its own."""
    quota = None
    async with platform.autocommit.connect() as conn:
        throttle = Throttle(client, platform.settings.auth_failures_per_minute)
        verified = await _verify(conn, platform, credential, throttle)
        if verified is None:
            await _record_failure(conn, client)
        elif verified.rate_keys:
            rate = max(
                entitlements(platform.settings, plan).requests_per_minute for plan in verified.plans or ("free",)
            )
            quota = await take(conn, verified.rate_keys, rate)
    if verified is None:
        raise unauthorized()
    if quota is not None and quota.exceeded:
        raise refuse(quota)
    return verified.principal, quota


async def reverify(platform: Platform, credential: Credential) -> Principal | None:
    """The credential's principal now, or ``None`` once it is revoked or expired (long-lived responses)."""
    async with platform.autocommit.connect() as conn:
        verified = await _verify(conn, platform, credential, None)
    return verified.principal if verified else None


@dataclass(frozen=True)
class Throttle:
    """The client a credential came from, refused (429) for the rest of the minute once it has
    presented ``limit`` wrong credentials in it: before its credential is looked at, so a right
    guess then is not confirmed either."""

    client: str
    limit: int

    def failures(self) -> list[sa.ColumnElement[Any]]:
        """The client's failure window as two more columns of a credential's lookup (``NULL`` when
        it has none): the check then costs no statement of its own."""
        mine = AUTH_FAILURES.c.client == self.client
        return [
            sa.select(AUTH_FAILURES.c.window_started).where(mine).scalar_subquery().label("failed_since"),
            sa.select(AUTH_FAILURES.c.failures).where(mine).scalar_subquery().label("failures"),
        ]

    def check(self, failed_since: datetime | None, failures: int | None) -> None:
        if failed_since is None or failures is None or failures < self.limit:
            return
        left = (failed_since + WINDOW - datetime.now(UTC)).total_seconds()
        if left > 0:
            raise ApiError(
                429,
                "too_many_failed_attempts",
                f"too many wrong credentials from this address: try again in {math.ceil(left)} s",
                headers={"Retry-After": str(math.ceil(left))},
            )

    async def check_alone(self, conn: AsyncConnection) -> None:
        """The check as a statement of its own (a credential with nothing to look up)."""
        row = (await conn.execute(sa.select(*self.failures()))).one()
        self.check(row.failed_since, row.failures)


async def _check_throttle(conn: AsyncConnection, throttle: Throttle | None, looked_up: Any) -> None:
    """The throttle (if any) from the credential's lookup row, or alone when nothing was found."""
    if throttle is None:
        return
    if looked_up is None:
        await throttle.check_alone(conn)
    else:
        throttle.check(looked_up.failed_since, looked_up.failures)


async def _verify(
    conn: AsyncConnection, platform: Platform, credential: Credential, throttle: Throttle | None
) -> Verified | None:
    """The credential's principal (``None``: not valid), the client's throttle checked first (``None``: not)."""
    if credential.kind == "session":
        return await _verify_session(conn, credential.value, throttle)
    admin = platform.settings.admin_token
    is_admin = admin is not None and hmac.compare_digest(credential.value.encode(), admin.get_secret_value().encode())
    parsed = None if is_admin else parse_token(credential.value)
    if parsed is None:  # the admin token, or a malformed one: nothing to look up
        await _check_throttle(conn, throttle, None)
        return Verified(Principal.admin()) if is_admin else None
    token_id, secret = parsed
    row = (
        await conn.execute(
            sa.select(
                TOKENS.c.project_id,
                TOKENS.c.user_id,
                TOKENS.c.secret_digest,
                TOKENS.c.expires_at,
                TOKENS.c.last_used_at,
                TOKENS.c.scopes,
                project_plan(),
                PROJECTS.c.organization_id,
                PROJECTS.c.deleted_at,
                *(throttle.failures() if throttle else ()),
            )
            .outerjoin(PROJECTS, PROJECTS.c.id == TOKENS.c.project_id)
            .where(TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None))
        )
    ).first()
    await _check_throttle(conn, throttle, row)
    now = datetime.now(UTC)
    if row is None or not hmac.compare_digest(row.secret_digest, token_digest(secret)):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        await conn.execute(sa.update(TOKENS).where(TOKENS.c.id == token_id).values(last_used_at=now))
    if row.user_id is not None:
        return await _user(conn, row.user_id, f"user:{row.user_id}", (f"token:{token_id}",), frozenset(row.scopes))
    if row.project_id is None or row.plan is None:
        return None
    principal = Principal.project_token(token_id, row.project_id, frozenset(row.scopes))
    keys = [f"token:{token_id}", f"project:{row.project_id}"]
    if row.organization_id is not None:
        keys.append(f"organization:{row.organization_id}")
    return Verified(principal, tuple(keys), (str(row.plan),))


async def _verify_session(conn: AsyncConnection, cookie: str, throttle: Throttle | None) -> Verified | None:
    parsed = parse_session(cookie)
    if parsed is None:
        await _check_throttle(conn, throttle, None)
        return None
    session_id, secret = parsed
    row = (
        await conn.execute(
            sa.select(
                SESSIONS.c.user_id,
                SESSIONS.c.secret_digest,
                SESSIONS.c.expires_at,
                *(throttle.failures() if throttle else ()),
            ).where(SESSIONS.c.id == session_id, SESSIONS.c.revoked_at.is_(None))
        )
    ).first()
    await _check_throttle(conn, throttle, row)
    if row is None or not hmac.compare_digest(row.secret_digest, token_digest(secret)):
        return None
    if row.expires_at <= datetime.now(UTC):
        return None
    return await _user(conn, row.user_id, f"user:{row.user_id}", (f"session:{session_id}",), frozenset(SCOPES))


async def _user(
    conn: AsyncConnection, user_id: uuid.UUID, actor: str, keys: tuple[str, ...], scopes: frozenset[str]
) -> Verified | None:
    """A user's principal: in each project of each of their organisations, what their role gives
    there, within what the credential allows. A platform administrator sees every project."""
    user = (await conn.execute(sa.select(USERS.c.platform_admin).where(USERS.c.id == user_id))).first()
    if user is None:
        return None
    roles = dict(
        (
            await conn.execute(
                sa.select(MEMBERSHIPS.c.organization_id, MEMBERSHIPS.c.role).where(MEMBERSHIPS.c.user_id == user_id)
            )
        )
        .tuples()
        .all()
    )
    projects = (
        await conn.execute(
            sa.select(PROJECTS.c.id, PROJECTS.c.organization_id, project_plan()).where(
                PROJECTS.c.organization_id.in_(roles), PROJECTS.c.deleted_at.is_(None)
            )
        )
    ).all()
    grants = (
        None
        if user.platform_admin and scopes == frozenset(SCOPES)
        else {p.id: up_to(ROLE_SCOPES[roles[p.organization_id]]) & scopes for p in projects}
    )
    principal = Principal(actor, grants=grants, user_id=user_id, memberships=roles, scopes=scopes)
    return Verified(principal, (f"user:{user_id}", *keys), tuple(str(p.plan) for p in projects))


async def record_failure(platform: Platform, client: str) -> None:
    """A wrong password counts like a wrong token."""
    async with platform.autocommit.connect() as conn:
        await Throttle(client, platform.settings.auth_failures_per_minute).check_alone(conn)
        await _record_failure(conn, client)


async def refuse_if_throttled(platform: Platform, client: str) -> None:
    async with platform.autocommit.connect() as conn:
        await Throttle(client, platform.settings.auth_failures_per_minute).check_alone(conn)


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
