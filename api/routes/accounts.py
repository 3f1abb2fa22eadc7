"""Users: sign-up, sign-in and sign-out (a session cookie), who am I, and personal tokens."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from api.authentication import record_failure, refuse_if_throttled
from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import ApiError, errors
from api.models import (
    Me,
    SessionPublic,
    SignIn,
    SignUp,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
    UserPublic,
)
from api.platform import Platform
from api.usecases import accounts
from infra.sessions import COOKIE, csrf_token, parse_session

router = APIRouter(tags=["accounts"], responses=errors(401, 403, 422, 429))


def set_session_cookie(response: Response, cookie: str, hours: int) -> None:
    """Secure and HttpOnly; SameSite=Lax so a link to the site arrives signed in (writes need the
    CSRF token anyway)."""
    response.set_cookie(COOKIE, cookie, max_age=hours * 3600, path="/", secure=True, httponly=True, samesite="lax")
    response.headers["Cache-Control"] = "no-store"


async def _signed_in(platform: Platform, response: Response, user: UserPublic) -> SessionPublic:
    hours = platform.settings.session_hours
    async with platform.engine.begin() as conn:
        cookie, expires = await accounts.open_session(conn, user.id, hours)
    set_session_cookie(response, cookie, hours)
    return SessionPublic(user=user, csrf_token=csrf_token(cookie), expires_at=expires)


@router.post("/auth/sign-up", status_code=201, response_model=SessionPublic, responses=errors(409, 413, 415))
async def sign_up(*, platform: PlatformDep, response: Response, body: SignUp) -> SessionPublic:
    """Create an account and sign in: the session is an HttpOnly cookie; writes made with it carry
    the returned ``csrf_token`` in X-CSRF-Token. 403 when the platform takes accounts by invitation."""
    if not platform.settings.signup:
        raise ApiError(403, "signup_closed", "this platform creates accounts by invitation only")
    async with platform.engine.begin() as conn:
        user = await accounts.sign_up(conn, body.email, body.password, body.name)
    return await _signed_in(platform, response, user)


@router.post("/auth/sign-in", response_model=SessionPublic, responses=errors(413, 415))
async def sign_in(*, platform: PlatformDep, request: Request, response: Response, body: SignIn) -> SessionPublic:
    """Sign in with email and password. Wrong ones count like wrong tokens: past the limit, 429."""
    client = request.client.host if request.client else ""
    await refuse_if_throttled(platform, client)
    async with platform.autocommit.connect() as conn:
        user = await accounts.check_password(conn, body.email, body.password)
    if user is None:
        await record_failure(platform, client)
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    return await _signed_in(platform, response, accounts.user_public(user))


@router.post("/auth/sign-out", status_code=204, responses=errors(413, 415))
async def sign_out(*, platform: PlatformDep, principal: CurrentPrincipal, request: Request, response: Response) -> None:
    """End this browser's session (its cookie stops working at once)."""
    parsed = parse_session(request.cookies.get(COOKIE, ""))
    if request.state.credential.kind == "session" and parsed is not None:
        async with platform.engine.begin() as conn:
            await accounts.close_session(conn, parsed[0])
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")


@router.get("/me", response_model=Me)
async def read_me(*, platform: PlatformDep, principal: CurrentPrincipal) -> Me:
    """The signed-in user (or a personal token's) and their organizations with their roles."""
    async with platform.autocommit.connect() as conn:
        return await accounts.me(conn, principal)


@router.post("/me/tokens", status_code=201, response_model=TokenCreated, responses=errors(413, 415))
async def create_token(*, principal: CurrentPrincipal, mutation: MutationDep, body: TokenCreate) -> TokenCreated:
    """A personal token: it acts as you, within its scopes, in every project your roles reach. The
    secret is shown once."""
    return await mutation.run(
        lambda conn: accounts.create_personal_token(conn, principal, body), TokenCreated, sealed=True
    )


@router.get("/me/tokens", response_model=TokensPublic)
async def read_tokens(*, platform: PlatformDep, principal: CurrentPrincipal) -> TokensPublic:
    """Your personal tokens, revoked ones included, never their secrets."""
    async with platform.autocommit.connect() as conn:
        return await accounts.list_personal_tokens(conn, principal)


@router.delete("/me/tokens/{token_id}", response_model=TokenPublic, responses=errors(404, 413, 415))
async def revoke_token(*, principal: CurrentPrincipal, mutation: MutationDep, token_id: uuid.UUID) -> TokenPublic:
    """Revoke a personal token: the next request with it is a 401."""
    return await mutation.run(lambda conn: accounts.revoke_personal_token(conn, principal, token_id), TokenPublic)
