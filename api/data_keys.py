"""How the API reads a backup without holding any backup master key: it asks the backup's data
host for that one backup's data key (a signed request, answered sealed to a key made for it)."""

from __future__ import annotations

import base64
import json
import uuid

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from consumers.agent.key_service import data_key_context
from infra.backup_crypto import BackupIntegrityError, KeySource
from infra.errors import Unreachable
from infra.secrets import new_host_key, unseal
from infra.signing import CommandSigner
from schemas.commands import RevealDataKey
from schemas.envelope import Envelope
from schemas.subjects import Subjects

TIMEOUT_SECONDS = 10.0


class DataKeys:
    def __init__(self, nc: NATS, subjects: Subjects, signer: CommandSigner) -> None:
        self._nc = nc
        self._subjects = subjects
        self._signer = signer

    def source(self, *, host_id: str, backup_id: uuid.UUID, project_id: uuid.UUID, actor: str) -> KeySource:
        """The key source ``decrypt_stream`` reads this backup with."""

        async def data_key(key_id: str, salt: bytes) -> bytes:
            private, public = new_host_key()
            request = RevealDataKey(
                backup_id=backup_id, key_id=key_id, salt=base64.b64encode(salt).decode(), reply_key=public
            )
            subject = self._subjects.key_service(host_id)
            envelope = Envelope.wrap(
                request, correlation_id=uuid.uuid4(), sequence=0, actor=actor, project_id=project_id
            )
            try:
                reply = await self._nc.request(
                    subject, self._signer.sign(envelope, subject).model_dump_json().encode(), timeout=TIMEOUT_SECONDS
                )
            except (NatsError, TimeoutError) as exc:
                raise Unreachable(f"the key service of data host {host_id}: {exc or type(exc).__name__}") from exc
            answer = json.loads(reply.data)
            if "sealed" not in answer:
                raise BackupIntegrityError(f"the data host refused the key: {answer.get('error')}")
            return base64.b64decode(
                unseal(answer["sealed"], private_key_b64=private, context=data_key_context(request))
            )

        return data_key
