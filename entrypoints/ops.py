"""``pgplane ops``: what an operator looks at and repairs by hand.

- ``status``: every stream and durable consumer (pending, waiting for an ack, redelivered), the
  projector's checkpoint and lag, dead letters, webhook deliveries waiting, operations stuck;
- ``dead-letters``: list, show one, discard one (the message stays in nobody's way afterwards);
- ``stuck``: operations not finished long after they were accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.metadata.tables import WEBHOOK_DELIVERIES
from readmodel.tables import CHECKPOINTS, IN_FLIGHT, OPERATIONS
from schemas.subjects import Subjects


@dataclass(frozen=True)
class Ops:
    engine: AsyncEngine
    js: JetStreamContext
    subjects: Subjects

    async def status(self, *, stuck_after: timedelta) -> dict[str, Any]:
        s = self.subjects
        streams, consumers = {}, {}
        for name in (s.commands_stream, s.events_stream, s.dead_letter_stream, s.heartbeats_stream):
            info = await self.js.stream_info(name)
            streams[name] = {
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "first_sequence": info.state.first_seq,
                "last_sequence": info.state.last_seq,
            }
            for consumer in await self.js.consumers_info(name):
                if consumer.config.durable_name:
                    consumers[f"{name}/{consumer.name}"] = {
                        "pending": consumer.num_pending,
                        "waiting_for_ack": consumer.num_ack_pending,
                        "redelivered": consumer.num_redelivered,
                        "pull_requests_waiting": consumer.num_waiting,
                    }
        async with self.engine.connect() as conn:
            checkpoint = (
                await conn.execute(sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == "live"))
            ).scalar_one_or_none() or 0
            webhooks = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(WEBHOOK_DELIVERIES.c.created_at)).where(
                        WEBHOOK_DELIVERIES.c.status == "pending"
                    )
                )
            ).one()
        now = datetime.now(UTC)
        return {
            "streams": streams,
            "consumers": consumers,
            "projector": {
                "checkpoint": checkpoint,
                "lag_events": max(0, streams[s.events_stream]["last_sequence"] - checkpoint),
            },
            "dead_letters": streams[s.dead_letter_stream]["messages"],
            "webhook_deliveries_pending": {
                "count": webhooks[0],
                "oldest_seconds": round((now - webhooks[1]).total_seconds(), 1) if webhooks[1] else None,
            },
            "operations_stuck": len(await self.stuck(older_than=stuck_after)),
        }

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first: where it came from and why."""
        info = await self.js.stream_info(self.subjects.dead_letter_stream)
        found = []
        sequence = info.state.first_seq
        while info.state.messages and sequence <= info.state.last_seq:
            try:
                msg = await self.js.get_msg(
                    self.subjects.dead_letter_stream, seq=sequence, subject=self.subjects.all_dead_letters(), next=True
                )
            except NotFoundError:
                break
            headers = msg.headers or {}
            found.append(
                {
                    "sequence": msg.seq,
                    "subject": msg.subject,
                    "reason": headers.get("Pgplane-Reason"),
                    "original_subject": headers.get("Pgplane-Original-Subject"),
                    "original_sequence": headers.get("Pgplane-Original-Sequence"),
                    "bytes": len(msg.data or b""),
                }
            )
            sequence = (msg.seq or sequence) + 1
        return found

    async def dead_letter(self, sequence: int) -> dict[str, Any]:
        msg = await self.js.get_msg(self.subjects.dead_letter_stream, seq=sequence)
        return {
            "sequence": msg.seq,
            "subject": msg.subject,
            "headers": msg.headers or {},
            "body": (msg.data or b"").decode("utf-8", errors="replace"),
        }

    async def discard_dead_letter(self, sequence: int) -> None:
        await self.js.delete_msg(self.subjects.dead_letter_stream, sequence)

    async def stuck(self, *, older_than: timedelta) -> list[dict[str, Any]]:
        """Operations accepted or running for longer than ``older_than``, oldest first."""
        since = datetime.now(UTC) - older_than
        query = (
            sa.select(
                OPERATIONS.c.id,
                OPERATIONS.c.project_id,
                OPERATIONS.c.database_id,
                OPERATIONS.c.kind,
                OPERATIONS.c.status,
                OPERATIONS.c.created_at,
                OPERATIONS.c.updated_at,
            )
            .where(OPERATIONS.c.status.in_(IN_FLIGHT), OPERATIONS.c.created_at < since)
            .order_by(OPERATIONS.c.created_at)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{k: str(v) for k, v in row._mapping.items()} for row in rows]
