"""pgplane as the OAuth 2.0 authorization server of its own CLI: the device authorization grant
(RFC 8628), its metadata (RFC 8414), and the page where a signed-in user approves a code.

These speak OAuth, not the API's error format: form-encoded requests, and errors as
``{"error", "error_description"}`` (RFC 6749, section 5.2).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api.authentication import Credential, record_failure, refuse_if_throttled, reverify
from api.deps import PlatformDep
from api.errors import ApiError
from api.platform import Platform
from api.principal import Principal
from api.usecases import accounts, device_flow
from api.usecases.device_flow import GRANT_TYPE, OAuthError
from infra.sessions import COOKIE, csrf_matches, csrf_token

router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _form(request: Request) -> dict[str, str]:
    """A form-encoded body; a parameter given twice is an error (RFC 6749, section 3.1)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    if any(len(values) > 1 for values in fields.values()):
        raise OAuthError("invalid_request", "a parameter is given more than once")
    return {key: values[0] for key, values in fields.items()}


def _oauth_error(error: OAuthError) -> JSONResponse:
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=NO_STORE)


@router.get("/.well-known/oauth-authorization-server")
async def metadata(*, platform: PlatformDep) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    base = platform.settings.base_url()
    return {
        "issuer": base,
        "device_authorization_endpoint": f"{base}/oauth/device/code",
        "token_endpoint": f"{base}/oauth/token",
        "grant_types_supported": [GRANT_TYPE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["read", "write", "admin"],
        "service_documentation": f"{base}/api/docs",
    }


@router.post("/oauth/device/code")
async def device_code(*, platform: PlatformDep, request: Request) -> JSONResponse:
    """RFC 8628, section 3.1: a device code, the user code and where to enter it."""
    try:
        form = await _form(request)
        async with platform.engine.begin() as conn:
            answer = await device_flow.start(conn, platform.settings, form.get("client_id"), form.get("scope"))
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(answer, headers=NO_STORE)


@router.post("/oauth/token")
async def token(*, platform: PlatformDep, request: Request) -> JSONResponse:
    """RFC 8628, section 3.4: the device code exchanged for a personal token once approved."""
    try:
        form = await _form(request)
        if form.get("grant_type") != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", f"this server grants {GRANT_TYPE} only")
        if not form.get("device_code"):
            raise OAuthError("invalid_request", "device_code is required")
        async with platform.engine.begin() as conn:
            answer = await device_flow.poll(conn, platform.settings, form.get("client_id"), form["device_code"])
        if isinstance(answer, OAuthError):
            raise answer
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(answer, headers=NO_STORE)


# --- the page where a user approves a code ---------------------------------------------------

CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pgplane: connect a device</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto">
<h1>Connect a device</h1>
{body}
</body></html>"""


def _page(body: str, status: int = 200) -> HTMLResponse:
    headers = NO_STORE | {"X-Frame-Options": "DENY", "Content-Security-Policy": CSP}
    return HTMLResponse(PAGE.format(body=body), status_code=status, headers=headers)


def _form_html(user_code: str, csrf: str | None) -> str:
    code = html.escape(user_code)
    sign_in = (
        ""
        if csrf
        else '<p><label>Email <input name="email" type="email" autocomplete="username" required></label></p>'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password" required>'
        "</label></p>"
    )
    hidden = f'<input type="hidden" name="csrf_token" value="{html.escape(csrf)}">' if csrf else ""
    return (
        "<p>Enter the code your terminal shows, then approve only if you started this sign-in.</p>"
        f'<form method="post" action="/device">{hidden}'
        f'<p><label>Code <input name="user_code" value="{code}" autocomplete="off" required></label></p>{sign_in}'
        '<button name="action" value="approve">Approve</button> '
        '<button name="action" value="deny">Deny</button></form>'
    )


async def _session_user(platform: Platform, request: Request) -> Principal | None:
    cookie = request.cookies.get(COOKIE, "")
    principal = await reverify(platform, Credential("session", cookie)) if cookie else None
    return principal if principal is not None and principal.user_id is not None else None


@router.get("/device")
async def device_page(*, platform: PlatformDep, request: Request, user_code: str = "") -> HTMLResponse:
    signed_in = await _session_user(platform, request)
    csrf = csrf_token(request.cookies[COOKIE]) if signed_in else None
    return _page(_form_html(user_code[:20], csrf))


@router.post("/device")
async def decide(*, platform: PlatformDep, request: Request) -> HTMLResponse:
    """Approve or deny a code: signed in (the session's CSRF token in the form), or with email and
    password in the same form."""
    form = {key: values[0] for key, values in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    user_code, action = form.get("user_code", ""), form.get("action", "")
    principal = await _session_user(platform, request)
    if principal is not None:
        if not csrf_matches(request.cookies[COOKIE], form.get("csrf_token", "")):
            return _page("<p>This form expired: reload the page and try again.</p>", 403)
        user_id = principal.user_id
    else:
        client = request.client.host if request.client else ""
        try:
            await refuse_if_throttled(platform, client)
        except ApiError as error:
            return _page(f"<p>{html.escape(error.message)}</p>", 429)
        async with platform.autocommit.connect() as conn:
            user = await accounts.check_password(conn, form.get("email", "").lower(), form.get("password", ""))
        if user is None:
            await record_failure(platform, client)
            return _page("<p>Wrong email or password.</p>" + _form_html(user_code[:20], None), 401)
        user_id = user.id
    if action not in ("approve", "deny") or user_id is None:
        return _page("<p>Choose Approve or Deny.</p>" + _form_html(user_code[:20], None), 422)
    async with platform.engine.begin() as conn:
        decided = await device_flow.decide(conn, user_id, user_code, approve=action == "approve")
    if decided is None:
        return _page("<p>This code is unknown or expired: start the sign-in again on your device.</p>", 404)
    if action == "deny":
        return _page("<p>Denied. The device was not connected.</p>")
    return _page("<p>Approved. You can return to your terminal.</p>")
