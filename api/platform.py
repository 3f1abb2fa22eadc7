"""What the API process holds, handed over by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from api.data_keys import DataKeys
from infra.faults import NO_FAULTS, Faults
from infra.heartbeats import Heartbeats
from infra.metadata.notifications import Waiters
from infra.object_store import ObjectStore
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.webhook_sender import WebhookSender
from producers.commands import Outbox, OutboxRelay
from schemas.subjects import Subjects


@dataclass(frozen=True, kw_only=True)
class Platform:
    """What the API process holds: settings, the metadata engine, the outbox relay, the key that
    encrypts passwords at rest, the object store and keys that serve backup downloads, what sends a
    webhook endpoint's test event, and the fault hooks (no-ops outside tests)."""

    settings: Settings
    engine: AsyncEngine
    autocommit: AsyncEngine
    """The same pool without transactions, for reads and single-statement writes: no ``BEGIN`` and
    ``ROLLBACK`` round trips around them. Under READ COMMITTED each statement sees its own snapshot
    inside a transaction too, so a read sees nothing different."""
    bus: NATS
    heartbeats: Heartbeats
    relay: OutboxRelay
    outbox: Outbox
    box: SecretBox
    store: ObjectStore
    data_keys: DataKeys
    webhooks: WebhookSender
    operation_ends: Waiters
    """Wakes a request waiting for an operation when the projector commits the operation's end."""
    faults: Faults = NO_FAULTS

    @property
    def subjects(self) -> Subjects:
        return self.outbox.subjects
