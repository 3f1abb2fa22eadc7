"""The projector process: fetch a batch of events, apply them, the audit rows and the
checkpoint in ONE transaction (a few multi-row statements, ``readmodel.batch``), and ack only
after it commits.

Events are "written atomically and uniquely with tracking information about the position of
the processed event": a batch redelivered after a crash is skipped up to the checkpoint.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from readmodel.projection import apply_events
from readmodel.tables import CHECKPOINTS
from schemas.envelope import Envelope

log = logging.getLogger("pgplane.projector")
BATCH = 1000
LIVE = "live"


async def project_batch(conn: AsyncConnection, msgs: list[Msg], *, checkpoint_name: str = LIVE) -> int:
    """Apply the messages above the checkpoint; returns the new checkpoint (caller commits)."""
    await conn.execute(insert(CHECKPOINTS).values(name=checkpoint_name, last_sequence=0).on_conflict_do_nothing())
    last = (
        await conn.execute(
            sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == checkpoint_name).with_for_update()
        )
    ).scalar_one()
    events = []
    for msg in msgs:
        sequence = msg.metadata.sequence.stream
        if sequence <= last:
            continue
        try:
            events.append(Envelope.model_validate_json(msg.data))
        except (ValidationError, ValueError) as exc:
            log.error("skipping unreadable event at stream sequence %d: %s", sequence, exc)
        last = sequence
    await apply_events(conn, events)
    await conn.execute(sa.update(CHECKPOINTS).where(CHECKPOINTS.c.name == checkpoint_name).values(last_sequence=last))
    return int(last)


class Projector:
    """Consumes the events stream through its durable pull subscription."""

    def __init__(self, engine: AsyncEngine, subscription: JetStreamContext.PullSubscription) -> None:
        self._engine = engine
        self._sub = subscription

    async def run(self, stop: asyncio.Event) -> None:
        log.info("projector consuming")
        while not stop.is_set():
            try:
                msgs = await self._sub.fetch(BATCH, timeout=1.0)
            except (NatsTimeout, TimeoutError):  # nats-py raises either on an empty fetch
                continue
            await _apply_until_committed(self._engine, msgs, stop)


async def _apply_until_committed(engine: AsyncEngine, msgs: list[Msg], stop: asyncio.Event) -> None:
    """Retry the same batch: fetching past it could move the checkpoint over unapplied events."""
    while not stop.is_set():
        try:
            await _commit_then_ack(engine, msgs)
            return
        except Exception:
            log.exception("projecting a batch failed; retrying it")
            await asyncio.sleep(1)


async def _commit_then_ack(engine: AsyncEngine, msgs: list[Msg]) -> None:
    async with engine.begin() as conn:
        await project_batch(conn, msgs)
    for msg in msgs:
        await msg.ack()
