"""Browser sign-in through the configured OpenID Connect provider (``api.usecases.oidc``): leave
for the provider, come back with a code, leave signed in (the same session cookie as a password
sign-in)."""

from __future__ import annotations

import html

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import PlatformDep
from api.errors import ApiError
from api.routes.accounts import set_session_cookie
from api.usecases import accounts, oidc
from api.usecases.oidc import Login, SignInRefused

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "__Host-pgplane_oidc"


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10, trust_env=False, follow_redirects=False)


def _refused(reason: str) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>pgplane: sign-in refused</title>"
        f"<h1>Sign-in refused</h1><p>{html.escape(reason)}</p><p><a href=/auth/oidc/login>Start again</a></p>"
    )
    response = HTMLResponse(body, status_code=400, headers={"Cache-Control": "no-store"})
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


@router.get("/auth/oidc/login")
async def login(*, platform: PlatformDep, next: str | None = None) -> Response:
    """To the provider's sign-in page, remembering (sealed, in a cookie) what must come back."""
    settings = platform.settings
    if not settings.oidc_issuer:
        raise ApiError(404, "not_found", "no OpenID Connect provider is configured")
    async with _client() as http:
        provider = await oidc.discover(http, settings.oidc_issuer)
    url, started = oidc.start(settings, provider, next)
    response = RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_COOKIE,
        started.seal(platform.box),
        max_age=oidc.LOGIN_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",  # it must come back with the provider's redirect
    )
    return response


@router.get("/auth/oidc/callback")
async def callback(
    *,
    platform: PlatformDep,
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    settings = platform.settings
    if not settings.oidc_issuer:
        raise ApiError(404, "not_found", "no OpenID Connect provider is configured")
    try:
        started = Login.open(platform.box, request.cookies.get(LOGIN_COOKIE, ""))
        oidc.check_state(started, state)
        if error or not code:
            raise SignInRefused(f"the provider did not sign you in ({error or 'no code'})")
        async with _client() as http:
            provider = await oidc.discover(http, settings.oidc_issuer)
            tokens = await oidc.exchange(http, settings, provider, started, code)
            keys = (await http.get(provider.jwks_uri)).json()
        claims = oidc.validate_id_token(
            tokens["id_token"], keys, issuer=provider.issuer, client_id=settings.oidc_client_id, nonce=started.nonce
        )
        async with platform.engine.begin() as conn:
            user_id = await oidc.user_for(conn, settings, provider.issuer, claims)
    except SignInRefused as refused:
        return _refused(str(refused))
    response = RedirectResponse(started.next, status_code=302, headers={"Cache-Control": "no-store"})
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    async with platform.engine.begin() as conn:
        cookie, _ = await accounts.open_session(conn, user_id, settings.session_hours)
    set_session_cookie(response, cookie, settings.session_hours)
    return response
