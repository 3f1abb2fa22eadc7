"""Dependencies as ``Annotated`` aliases: the platform, the caller, the idempotency key."""

from __future__ import annotations

import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError, not_found
from infra.backup_crypto import BackupKeys
from infra.faults import NO_FAULTS, Faults
from infra.metadata.tables import TOKENS
from infra.object_store import ObjectStore
from infra.secrets import SecretBox, token_digest
from infra.settings import Settings
from producers.commands import OutboxRelay
from schemas.subjects import Subjects

TOKEN_FORMAT = re.compile(r"^pgp_([0-9a-f]{32})_([A-Za-z0-9_-]{20,})$")


@dataclass(frozen=True, kw_only=True)
class Platform:
    """What the API process holds: settings, the metadata engine, the outbox relay, the key that
    encrypts passwords at rest, the object store and keys that serve backup downloads, and the
    fault hooks (no-ops outside tests)."""

    settings: Settings
    engine: AsyncEngine
    relay: OutboxRelay
    box: SecretBox
    store: ObjectStore
    backup_keys: BackupKeys
    faults: Faults = NO_FAULTS

    @property
    def subjects(self) -> Subjects:
        return Subjects(namespace=self.settings.namespace)


@dataclass(frozen=True)
class Principal:
    actor: str
    project_id: uuid.UUID | None  # None: the admin token, which sees every project

    @property
    def is_admin(self) -> bool:
        return self.project_id is None

    def sees(self, project_id: uuid.UUID) -> bool:
        return self.is_admin or project_id == self.project_id

    def check_project(self, project_id: uuid.UUID) -> None:
        """Another tenant's project is indistinguishable from a missing one."""
        if not self.is_admin and project_id != self.project_id:
            raise not_found("project")


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_principal(platform: PlatformDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    unauthorized = ApiError(
        401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized
    admin = platform.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Principal("admin", None)
    match = TOKEN_FORMAT.match(token)
    if match is None:
        raise unauthorized
    token_id, secret = uuid.UUID(match.group(1)), match.group(2)
    async with platform.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(TOKENS.c.project_id, TOKENS.c.secret_digest).where(
                    TOKENS.c.id == token_id, TOKENS.c.revoked_at.is_(None)
                )
            )
        ).first()
    if row is None or not hmac.compare_digest(row.secret_digest, token_digest(secret)):
        raise unauthorized
    return Principal(f"token:{token_id}", row.project_id)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this needs the admin token")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Same key + same body → same result for 24 h.",
    ),
]
