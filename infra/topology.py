"""JetStream topology as code: streams and durable consumers, created or updated at start-up."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from infra.settings import Settings
from schemas.subjects import Subjects

DAY = 24 * 3600.0
DUPLICATE_WINDOW = 600.0  # a retried publish within 10 minutes is dropped by the server


def streams(subjects: Subjects) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.commands_stream,
            subjects=[subjects.all_commands()],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
            max_age=7 * DAY,
        ),
        StreamConfig(
            name=subjects.events_stream,
            subjects=[subjects.all_events()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
            max_age=365 * DAY,
        ),
        StreamConfig(
            name=subjects.heartbeats_stream,
            subjects=[subjects.heartbeat(">")],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
        ),
        StreamConfig(
            name=subjects.dead_letter_stream,
            subjects=[subjects.all_dead_letters()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
            max_age=90 * DAY,
        ),
        StreamConfig(
            name=subjects.advisories_stream,
            subjects=[subjects.max_deliveries(subjects.commands_stream)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=90 * DAY,
        ),
    ]


def agent_consumer(subjects: Subjects, settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.agent_durable(settings.host_id),
        filter_subject=subjects.host_commands(settings.host_id),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        # deliveries past max_attempts are the dead-letter turns; three of them survive a crash there
        max_deliver=settings.max_attempts + 3,
        ack_wait=settings.ack_wait_seconds,
        max_ack_pending=1000,
    )


def projector_consumer(subjects: Subjects) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=subjects.projector_durable,
        filter_subject=subjects.all_events(),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=60.0,
        max_ack_pending=20000,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> list[str]:
    """Create or update every stream and durable (idempotent; ``pgplane migrate bus`` runs it)."""
    subjects = Subjects(namespace=settings.namespace)
    made = []
    for config in streams(subjects):
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
        made.append(config.name or "")
    await js.add_consumer(subjects.commands_stream, agent_consumer(subjects, settings))
    await js.add_consumer(subjects.events_stream, projector_consumer(subjects))
    return [*made, subjects.agent_durable(settings.host_id), subjects.projector_durable]
