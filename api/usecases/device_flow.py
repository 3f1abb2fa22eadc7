"""The OAuth 2.0 device authorization grant (RFC 8628): how the CLI signs in.

The CLI asks for a code (``start``), shows the user the short ``user_code`` and the page to enter
it, and polls (``poll``). The user, signed in, approves or denies it on that page (``decide``).
Each poll before that is ``authorization_pending``; a poll sooner than the interval is ``slow_down``
and adds 5 seconds to the interval for good (RFC 8628, section 3.5); a denied code is
``access_denied``, an old one ``expired_token``. An approved code gives one personal token, once.
Only digests of device codes are stored; a user code is worth nothing without a signed-in user.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.principal import SCOPES
from api.usecases.accounts import insert_personal_token
from infra.metadata.tables import DEVICE_AUTHORIZATIONS
from infra.secrets import token_digest
from infra.settings import Settings
from infra.tokens import new_token

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
"""RFC 8628, section 6.1: no vowels (no words), nothing that reads like a digit; 20^8 codes."""
USER_CODE_LENGTH = 8
DEFAULT_SCOPES = ("read", "write")
SLOW_DOWN_SECONDS = 5


class OAuthError(Exception):
    """An error of RFC 6749, section 5.2 (``{"error", "error_description"}``, usually a 400)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def format_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalize_user_code(given: str) -> str:
    """What the user typed, as stored: case, dashes and spaces do not matter."""
    return "".join(c for c in given.upper() if c.isalnum())


def parse_scopes(scope: str | None) -> list[str]:
    requested = scope.split() if scope else list(DEFAULT_SCOPES)
    if not requested or any(s not in SCOPES for s in requested):
        raise OAuthError("invalid_scope", f"scopes are {', '.join(SCOPES)}, separated by spaces")
    return [s for s in SCOPES if s in requested]


def check_client(settings: Settings, client_id: str | None) -> str:
    clients = {c.strip() for c in settings.device_clients.split(",") if c.strip()}
    if not client_id or client_id not in clients:
        raise OAuthError("invalid_client", "unknown client_id", status=401)
    return client_id


async def start(conn: AsyncConnection, settings: Settings, client_id: str | None, scope: str | None) -> dict[str, Any]:
    client = check_client(settings, client_id)
    scopes = parse_scopes(scope)
    device_code = secrets.token_urlsafe(32)
    user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    now = datetime.now(UTC)
    await conn.execute(
        sa.insert(DEVICE_AUTHORIZATIONS).values(
            id=uuid.uuid4(),
            device_code_digest=token_digest(device_code),
            user_code=user_code,
            client_id=client,
            scopes=scopes,
            status="pending",
            interval_seconds=settings.device_poll_seconds,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.device_code_seconds),
        )
    )
    page = f"{settings.base_url()}/device"
    return {
        "device_code": device_code,
        "user_code": format_user_code(user_code),
        "verification_uri": page,
        "verification_uri_complete": f"{page}?user_code={format_user_code(user_code)}",
        "expires_in": settings.device_code_seconds,
        "interval": settings.device_poll_seconds,
    }


async def poll(
    conn: AsyncConnection, settings: Settings, client_id: str | None, device_code: str
) -> dict[str, Any] | OAuthError:
    """The token once approved. Until then ``authorization_pending`` or ``slow_down``, returned (the
    poll is recorded: commit it); a request that can never succeed raises its error."""
    client = check_client(settings, client_id)
    row = (
        await conn.execute(
            sa.select(DEVICE_AUTHORIZATIONS)
            .where(DEVICE_AUTHORIZATIONS.c.device_code_digest == token_digest(device_code))
            .with_for_update()
        )
    ).first()
    if row is None or row.client_id != client:
        raise OAuthError("invalid_grant", "unknown device_code")
    now = datetime.now(UTC)
    if row.status == "issued":
        raise OAuthError("invalid_grant", "this device_code was already exchanged for a token")
    if row.status == "denied":
        raise OAuthError("access_denied", "the user denied the request")
    if row.expires_at <= now:
        raise OAuthError("expired_token", "the device_code expired: start again")
    update = sa.update(DEVICE_AUTHORIZATIONS).where(DEVICE_AUTHORIZATIONS.c.id == row.id)
    if row.status == "pending":
        too_soon = row.last_polled_at is not None and now - row.last_polled_at < timedelta(seconds=row.interval_seconds)
        interval = row.interval_seconds + (SLOW_DOWN_SECONDS if too_soon else 0)
        await conn.execute(update.values(last_polled_at=now, interval_seconds=interval))
        if too_soon:
            return OAuthError("slow_down", f"poll at most every {interval} seconds")
        return OAuthError("authorization_pending", "the user has not approved the request yet")
    token_id = uuid.uuid4()
    token, secret = new_token(token_id)
    name = f"{client} (device sign-in {now:%Y-%m-%d %H:%M} UTC)"
    await insert_personal_token(conn, token_id, row.user_id, name, secret, list(row.scopes), None)
    await conn.execute(update.values(status="issued", token_id=token_id, last_polled_at=now))
    return {"access_token": token, "token_type": "Bearer", "scope": " ".join(row.scopes)}


async def pending(conn: AsyncConnection, user_code: str) -> Any | None:
    """The pending, unexpired request a user code names."""
    return (
        await conn.execute(
            sa.select(DEVICE_AUTHORIZATIONS)
            .where(
                DEVICE_AUTHORIZATIONS.c.user_code == normalize_user_code(user_code),
                DEVICE_AUTHORIZATIONS.c.status == "pending",
                DEVICE_AUTHORIZATIONS.c.expires_at > datetime.now(UTC),
            )
            .order_by(DEVICE_AUTHORIZATIONS.c.created_at.desc())
            .limit(1)
            .with_for_update()
        )
    ).first()


async def decide(conn: AsyncConnection, user_id: uuid.UUID, user_code: str, *, approve: bool) -> Any | None:
    """Approve or deny the request for ``user_id``; ``None`` when no pending request has this code."""
    row = await pending(conn, user_code)
    if row is None:
        return None
    await conn.execute(
        sa.update(DEVICE_AUTHORIZATIONS)
        .where(DEVICE_AUTHORIZATIONS.c.id == row.id)
        .values(status="approved" if approve else "denied", user_id=user_id)
    )
    return row
