"""Dependencies as ``Annotated`` aliases: the platform, the caller, and the mutation a request makes."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from api.authentication import Credential, authenticate, unauthorized
from api.errors import ApiError
from api.idempotency import request_digest, store_response, stored_response
from api.platform import Platform
from api.principal import Principal
from infra.sessions import COOKIE, CSRF_HEADER, csrf_matches

log = logging.getLogger("pgplane.api")
Model = TypeVar("Model", bound=BaseModel)


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


BEARER = HTTPBearer(
    auto_error=False,
    description="The admin token, a project's API token or a user's personal token (`pgp_…`); a browser"
    " signed in with a session cookie sends no token, and its writes carry X-CSRF-Token.",
)


async def get_principal(
    request: Request,
    response: Response,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """The caller, from its bearer token or its session cookie. A cookie-authenticated write must
    carry the session's CSRF token (another site can make a browser send the cookie, not read the
    token). ``needs`` is the scope the request needs in the project it addresses."""
    client = request.client.host if request.client else ""
    cookie = request.cookies.get(COOKIE, "")
    if credentials is not None and credentials.credentials:
        credential = Credential("bearer", credentials.credentials)
    elif cookie:
        credential = Credential("session", cookie)
    else:
        raise unauthorized()
    principal, quota = await authenticate(platform, credential, client)
    if quota is not None:
        response.headers.update(quota.headers())
    writes = request.method not in READS
    if credential.kind == "session" and writes and not csrf_matches(cookie, request.headers.get(CSRF_HEADER, "")):
        raise ApiError(403, "csrf_failed", f"a signed-in browser's writes need the {CSRF_HEADER} header")
    request.state.credential = credential
    needs = getattr(request.state, "needs", "write") if writes else "read"
    principal.check_scope(needs)
    return replace(principal, needs=needs)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_project_admin(request: Request) -> None:
    """Changes to a project's webhooks need the ``admin`` scope in it (a caller that can read them, reads them)."""
    request.state.needs = "admin"


async def require_admin(principal: CurrentPrincipal) -> Principal:
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
