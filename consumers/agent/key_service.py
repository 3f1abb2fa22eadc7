"""The data host's key service: backup master keys never leave the agent. To stream a download, the
API asks for that one backup's data key (derived from the master key and the backup's salt) with a
signed request; the answer is sealed to a key the API made for this request alone."""

from __future__ import annotations

import base64
import json
import logging

from pydantic import ValidationError

from infra.backup_crypto import BackupIntegrityError, BackupKeys, local_keys
from infra.secrets import seal
from infra.signing import CommandVerifier, SignatureRejected
from schemas.commands import RevealDataKey
from schemas.envelope import Envelope

log = logging.getLogger("pgplane.keys")


def data_key_context(request: RevealDataKey) -> str:
    return f"pgplane-data-key:{request.backup_id}"


class KeyService:
    def __init__(self, keys: BackupKeys, verifier: CommandVerifier) -> None:
        self._keys = local_keys(keys)
        self._verifier = verifier

    async def answer(self, body: bytes, subject: str) -> bytes:
        """``{"sealed": ...}`` for a signed, well-formed request; ``{"error": ...}`` for anything else."""
        try:
            envelope = Envelope.model_validate_json(body)
            self._verifier.verify(envelope, subject)
            request = envelope.payload()
            if not isinstance(request, RevealDataKey):
                raise ValueError(f"{envelope.type} is not a data key request")
            data_key = await self._keys(request.key_id, base64.b64decode(request.salt))
        except (ValidationError, ValueError, SignatureRejected, BackupIntegrityError) as exc:
            log.warning("refused a data key request: %s", exc)
            return json.dumps({"error": str(exc)}).encode()
        log.info("revealed the data key of backup %s to %s", request.backup_id, envelope.actor)
        sealed = seal(
            base64.b64encode(data_key).decode(), public_key_b64=request.reply_key, context=data_key_context(request)
        )
        return json.dumps({"sealed": sealed}).encode()
