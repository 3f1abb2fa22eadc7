"""Signed commands: the API and the scheduler sign every command envelope with Ed25519; the agent
verifies before anything else looks at it.

What is signed: a domain tag, the subject the command is published on (so a command copied to
another host's subject fails), and the canonical JSON of the envelope (sorted keys, no spaces)
with its ``key_id`` but without its ``signature`` (an unset ``traceparent`` is not serialised, so
a command signed before it existed still verifies, while a set one is covered like any other
field). The key id names the signing key, so keys
rotate: agents accept every key listed in their verify keys; signers use one.

Keys are written ``<key id>:<base64 of the 32 raw bytes>``: the private seed for a signer, the
public key for a verifier, several verify keys separated by commas.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.envelope import Envelope

DOMAIN = b"pgplane-command-v1\n"
KEY_ID = re.compile(r"^[a-z0-9-]{1,32}$")


class SignatureRejected(Exception):
    """An unsigned, forged, tampered or misdirected command."""


def _parse(spec: str) -> tuple[str, bytes]:
    key_id, sep, encoded = spec.strip().partition(":")
    if not sep or not KEY_ID.match(key_id):
        raise ValueError("signing keys look like '<key id>:<base64 key>' with a key id of [a-z0-9-]")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError(f"signing key {key_id!r} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"signing key {key_id!r} must be 32 bytes")
    return key_id, raw


def signed_bytes(envelope: Envelope, subject: str) -> bytes:
    body = envelope.model_dump(mode="json", exclude={"signature"})
    return DOMAIN + subject.encode() + b"\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class CommandSigner:
    def __init__(self, spec: str) -> None:
        self.key_id, seed = _parse(spec)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    def sign(self, envelope: Envelope, subject: str) -> Envelope:
        keyed = envelope.model_copy(update={"key_id": self.key_id, "signature": None})
        signature = self._key.sign(signed_bytes(keyed, subject))
        return keyed.model_copy(update={"signature": base64.b64encode(signature).decode()})


class CommandVerifier:
    def __init__(self, spec: str) -> None:
        self._keys = {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in map(_parse, spec.split(","))}

    def verify(self, envelope: Envelope, subject: str) -> None:
        """``SignatureRejected`` unless a listed key signed exactly this envelope for this subject."""
        if envelope.signature is None or envelope.key_id is None:
            raise SignatureRejected("the command is not signed")
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise SignatureRejected(f"the command is signed with unknown key {envelope.key_id!r}")
        try:
            key.verify(base64.b64decode(envelope.signature, validate=True), signed_bytes(envelope, subject))
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureRejected(
                "the command's signature does not match it (forged, altered or misdirected)"
            ) from None


def new_signing_key(key_id: str = "s1") -> tuple[str, str]:
    """``(signing key, verify key)`` specs of a fresh Ed25519 pair."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{key_id}:{base64.b64encode(seed).decode()}", f"{key_id}:{base64.b64encode(public).decode()}"
