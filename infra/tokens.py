"""API token strings: ``pgp_<token id, 32 hex>_<secret, 43 url-safe>_<checksum, 6 base62>``.

The fixed ``pgp_`` prefix and the CRC32 checksum let secret scanners (and our own code, before any
database lookup) tell a real token from a random string: a typo or a forged token is refused
without a query. Only a SHA-256 digest of the secret is stored; the secret is 256 random bits.
"""

from __future__ import annotations

import re
import secrets
import uuid
import zlib

PREFIX = "pgp_"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FORMAT = re.compile(r"^pgp_([0-9a-f]{32})_([A-Za-z0-9_-]{43})_([0-9A-Za-z]{6})$")
FIRST_RELEASE_FORMAT = re.compile(r"^pgp_([0-9a-f]{32})_([A-Za-z0-9_-]{20,})$")
"""Tokens minted before the checksum existed still work."""


def _checksum(body: str) -> str:
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def new_token(token_id: uuid.UUID) -> tuple[str, str]:
    """``(token, secret)``: the whole token for the caller, the secret whose digest is stored."""
    secret = secrets.token_urlsafe(32)
    body = f"{PREFIX}{token_id.hex}_{secret}"
    return f"{body}_{_checksum(body)}", secret


def parse_token(token: str) -> tuple[uuid.UUID, str] | None:
    """``(token id, secret)`` of a well-formed token, ``None`` for anything else."""
    if match := FORMAT.match(token):
        if _checksum(f"{PREFIX}{match.group(1)}_{match.group(2)}") != match.group(3):
            return None
        return uuid.UUID(match.group(1)), match.group(2)
    if match := FIRST_RELEASE_FORMAT.match(token):
        return uuid.UUID(match.group(1)), match.group(2)
    return None
