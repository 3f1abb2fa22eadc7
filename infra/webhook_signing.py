"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256(id.timestamp.body)>`` keyed with the
endpoint's ``whsec_`` secret; while a rotated-out secret is still honoured, both are sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from infra.secrets import SecretBox

PREFIX = "whsec_"


def secret_context(endpoint_id: object) -> str:
    """What binds an endpoint's encrypted secret to its row."""
    return f"webhook:{endpoint_id}"


def endpoint_secrets(box: SecretBox, endpoint: Any, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous during the overlap."""
    context = secret_context(endpoint.id)
    found = [box.decrypt(endpoint.secret_encrypted, context=context)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret_encrypted is not None and until is not None and until > now:
        found.append(box.decrypt(endpoint.previous_secret_encrypted, context=context))
    return found


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets_in_use: list[str], *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery; one signature per secret, space-separated."""
    signatures = " ".join(sign(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets_in_use)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
