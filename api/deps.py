"""Dependencies as ``Annotated`` aliases: the platform, the caller, and the mutation a request makes."""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError
from api.idempotency import request_digest, store_response, stored_response
from api.platform import Platform
from api.principal import Principal
from infra.metadata.tables import TOKENS
from infra.secrets import token_digest

TOKEN_FORMAT = re.compile(r"^pgp_([0-9a-f]{32})_([A-Za-z0-9_-]{20,})$")
log = logging.getLogger("pgplane.api")
Model = TypeVar("Model", bound=BaseModel)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


BEARER = HTTPBearer(auto_error=False, description="The admin token, or an API token (`pgp_…`) of one project.")


async def get_principal(
    platform: PlatformDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    unauthorized = ApiError(
        401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None or not credentials.credentials:
        raise unauthorized
    token = credentials.credentials
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


@dataclass(frozen=True, kw_only=True)
class Mutation:
    """What a mutating request changes, in ONE transaction with its idempotency record; the outbox
    is drained right after the commit so its messages leave at once.

    With an ``Idempotency-Key``, the same key and the same request (method, path, body) return the
    stored response instead of changing anything again; the same key with another request is a 422.
    """

    platform: Platform
    principal: Principal
    key: str | None
    digest: str
    status_code: int

    async def run(
        self, change: Callable[[AsyncConnection], Awaitable[Model]], model: type[Model], *, sealed: bool = False
    ) -> Model:
        """``change`` inside the transaction, or the response stored for this key. ``sealed`` keeps the
        stored response encrypted at rest (it holds a secret that is shown once)."""
        platform = self.platform
        ttl = timedelta(hours=platform.settings.idempotency_ttl_hours)
        async with platform.engine.begin() as conn:
            stored = None
            if self.key is not None:
                stored = await stored_response(
                    conn, principal=self.principal.actor, key=self.key, digest=self.digest, ttl=ttl
                )
            if stored is not None:
                result = model.model_validate(self._unseal(stored) if sealed else stored)
            else:
                result = await change(conn)
                if self.key is not None:
                    body = result.model_dump(mode="json")
                    await store_response(
                        conn,
                        principal=self.principal.actor,
                        key=self.key,
                        digest=self.digest,
                        status_code=self.status_code,
                        body=self._seal(body) if sealed else body,
                    )
        platform.faults.crash_point("api.accepted")
        try:
            await platform.relay.drain()
        except Exception:
            log.exception("publishing after accept failed; the outbox relay will retry")
        return result

    def _context(self) -> str:
        return f"idempotency:{self.principal.actor}:{self.key}"

    def _seal(self, body: dict[str, object]) -> dict[str, object]:
        return {"sealed": self.platform.box.encrypt(json.dumps(body), context=self._context()).hex()}

    def _unseal(self, stored: dict[str, object]) -> object:
        return json.loads(self.platform.box.decrypt(bytes.fromhex(str(stored["sealed"])), context=self._context()))


async def get_mutation(
    request: Request,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Same key + same request → the same response for 24 h, and the change happens once.",
        ),
    ] = None,
) -> Mutation:
    raw = await request.body()
    body = json.loads(raw) if raw else None  # already parsed and validated by the route's body model
    status_code = getattr(request.scope.get("route"), "status_code", None) or 200
    return Mutation(
        platform=platform,
        principal=principal,
        key=idempotency_key,
        digest=request_digest(request.method, request.url.path, body),
        status_code=status_code,
    )


MutationDep = Annotated[Mutation, Depends(get_mutation)]
