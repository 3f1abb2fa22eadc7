"""Browser session cookies: ``<session id, 32 hex>.<secret, 43 url-safe>``; only a SHA-256 digest
of the 256-bit secret is stored. The CSRF token of a session is an HMAC of its secret, so it is
checked without storing it and dies with the session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid

COOKIE = "__Host-pgplane_session"
"""``__Host-``: only ever set Secure, for this host, on ``/`` (no subdomain can plant one)."""
CSRF_HEADER = "X-CSRF-Token"
FORMAT = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$")


def new_session(session_id: uuid.UUID) -> tuple[str, str]:
    """``(cookie value, secret)``."""
    secret = secrets.token_urlsafe(32)
    return f"{session_id.hex}.{secret}", secret


def parse_session(cookie: str) -> tuple[uuid.UUID, str] | None:
    match = FORMAT.match(cookie)
    return (uuid.UUID(match.group(1)), match.group(2)) if match else None


def csrf_token(cookie: str) -> str:
    """What a cookie-authenticated write must carry in ``X-CSRF-Token``."""
    digest = hmac.digest(cookie.encode(), b"pgplane csrf", hashlib.sha256)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(cookie: str, given: str) -> bool:
    return hmac.compare_digest(csrf_token(cookie).encode(), given.encode())
