"""Users: sign-up, sign-in (a session), sign-out, who am I, and personal tokens.

A personal token acts as its user, within its scopes: in each project, what the user's role in the
project's organisation gives, and no more than the token's scopes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import Me, OrganizationPublic, TokenCreate, TokenCreated, TokensPublic, UserPublic
from api.principal import Principal
from api.usecases.projects import token_public
from infra.metadata.tables import MEMBERSHIPS, ORGANIZATIONS, SESSIONS, TOKENS, USERS
from infra.passwords import hash_password, verify_password
from infra.secrets import token_digest
from infra.sessions import new_session
from infra.tokens import new_token


def user_public(row: Any) -> UserPublic:
    return UserPublic(
        id=row.id, email=row.email, name=row.name, platform_admin=row.platform_admin, created_at=row.created_at
    )


def check_user(principal: Principal) -> uuid.UUID:
    if principal.user_id is None:
        raise ApiError(403, "forbidden", "this needs a signed-in user or a personal token")
    return principal.user_id


async def sign_up(conn: AsyncConnection, email: str, password: str, name: str) -> UserPublic:
    """A new account; an email already taken is a 409 (and nothing changes)."""
    values = {
        "id": uuid.uuid4(),
        "email": email,
        "name": name,
        "password_hash": await hash_password(password),
        "platform_admin": False,
        "created_at": datetime.now(UTC),
    }
    row = (
        await conn.execute(
            insert(USERS).values(values).on_conflict_do_nothing(index_elements=["email"]).returning(USERS)
        )
    ).first()
    if row is None:
        raise ApiError(409, "email_taken", "an account with this email exists: sign in instead")
    return user_public(row)


async def check_password(conn: AsyncConnection, email: str, password: str) -> Any | None:
    """The user, if the password is theirs (as slow for an unknown email as for a wrong password)."""
    row = (await conn.execute(sa.select(USERS).where(USERS.c.email == email))).first()
    if not await verify_password(row.password_hash if row else None, password):
        return None
    return row


async def open_session(conn: AsyncConnection, user_id: uuid.UUID, hours: int) -> tuple[str, datetime]:
    """``(cookie value, expiry)`` of a new session."""
    session_id, now = uuid.uuid4(), datetime.now(UTC)
    cookie, secret = new_session(session_id)
    expires = now + timedelta(hours=hours)
    await conn.execute(
        sa.insert(SESSIONS).values(
            id=session_id, user_id=user_id, secret_digest=token_digest(secret), created_at=now, expires_at=expires
        )
    )
    return cookie, expires


async def close_session(conn: AsyncConnection, session_id: uuid.UUID) -> None:
    await conn.execute(
        sa.update(SESSIONS)
        .where(SESSIONS.c.id == session_id, SESSIONS.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def me(conn: AsyncConnection, principal: Principal) -> Me:
    user_id = check_user(principal)
    user = (await conn.execute(sa.select(USERS).where(USERS.c.id == user_id))).one()
    rows = (
        await conn.execute(
            sa.select(ORGANIZATIONS, MEMBERSHIPS.c.role)
            .join(MEMBERSHIPS, MEMBERSHIPS.c.organization_id == ORGANIZATIONS.c.id)
            .where(MEMBERSHIPS.c.user_id == user_id)
            .order_by(ORGANIZATIONS.c.created_at)
        )
    ).all()
    organizations = [
        OrganizationPublic(id=r.id, name=r.name, plan=r.plan, role=r.role, created_at=r.created_at) for r in rows
    ]
    return Me(user=user_public(user), organizations=organizations)


async def create_personal_token(conn: AsyncConnection, principal: Principal, request: TokenCreate) -> TokenCreated:
    """A token that acts as the caller; its secret is returned once and stored as a digest."""
    user_id = check_user(principal)
    token_id, now = uuid.uuid4(), datetime.now(UTC)
    token, secret = new_token(token_id)
    expires = now + timedelta(days=request.expires_in_days) if request.expires_in_days else None
    scopes = [s for s in request.scopes if s in principal.scopes]
    if len(scopes) != len(request.scopes):
        raise ApiError(403, "insufficient_scope", "a token cannot hold a scope its maker's credential lacks")
    await insert_personal_token(conn, token_id, user_id, request.name, secret, scopes, expires)
    row = (await conn.execute(sa.select(TOKENS).where(TOKENS.c.id == token_id))).one()
    return TokenCreated(**token_public(row).model_dump(), token=token)


async def insert_personal_token(
    conn: AsyncConnection,
    token_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    secret: str,
    scopes: Sequence[str],
    expires: datetime | None,
) -> None:
    await conn.execute(
        sa.insert(TOKENS).values(
            id=token_id,
            user_id=user_id,
            name=name,
            secret_digest=token_digest(secret),
            created_at=datetime.now(UTC),
            expires_at=expires,
            scopes=list(scopes),
        )
    )


async def list_personal_tokens(conn: AsyncConnection, principal: Principal) -> TokensPublic:
    user_id = check_user(principal)
    rows = (
        await conn.execute(sa.select(TOKENS).where(TOKENS.c.user_id == user_id).order_by(TOKENS.c.created_at))
    ).all()
    return TokensPublic(data=[token_public(r) for r in rows], count=len(rows))


async def revoke_personal_token(conn: AsyncConnection, principal: Principal, token_id: uuid.UUID) -> Any:
    user_id = check_user(principal)
    await conn.execute(
        sa.update(TOKENS)
        .where(TOKENS.c.id == token_id, TOKENS.c.user_id == user_id, TOKENS.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    row = (await conn.execute(sa.select(TOKENS).where(TOKENS.c.id == token_id, TOKENS.c.user_id == user_id))).first()
    if row is None:
        raise not_found("token")
    return token_public(row)
