"""``pgplane ops``: what an operator looks at and repairs by hand.

- ``status``: every stream and durable consumer (pending, waiting for an ack, redelivered), the
  projector's checkpoint and lag, dead letters, webhook deliveries waiting, operations stuck;
- ``dead-letters``: list, show one, redrive one (``producers.recovery``), discard one;
- ``stuck``: operations not finished long after they were accepted; retry or fail one;
- ``drifts``: what the reconciler found differing between the data hosts and the read model;
- ``webhook-replay``: a project's events again to one endpoint, after an event number or from a time.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import WebhookReplay
from api.principal import Principal
from api.usecases.webhooks import replay as replay_webhook
from entrypoints.bootstrap import bus
from entrypoints.control_plane import metadata, outbox
from infra.metadata.tables import USERS, WEBHOOK_DELIVERIES
from infra.settings import Settings
from producers import recovery
from producers.commands import Outbox, OutboxRelay
from readmodel.tables import CHECKPOINTS, DRIFTS, IN_FLIGHT, OPERATIONS, DriftStatus
from schemas.envelope import Envelope
from schemas.subjects import Subjects

RETRIES_EXHAUSTED = "dead-lettered"
"""How the reason of a command that kept failing starts (the rest were refused: never run)."""


@dataclass(frozen=True)
class Ops:
    engine: AsyncEngine
    js: JetStreamContext
    subjects: Subjects
    actor: str
    outbox: Outbox | None = None
    """Signs what an operator sends to a data host (redrive, retry, fail); absent: those are refused."""

    async def status(self, *, stuck_after: timedelta) -> dict[str, Any]:
        await self.collect_max_deliveries()
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
            "drifts_open": len(await self.drifts()),
        }

    async def drifts(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Open drifts (``everything``: repaired and resolved ones too), oldest first."""
        query = sa.select(DRIFTS).order_by(DRIFTS.c.first_seen_at)
        if not everything:
            query = query.where(DRIFTS.c.status == DriftStatus.OPEN.value)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{k: v for k, v in row._mapping.items()} for row in rows]

    async def platform_admin(self, email: str, *, grant: bool) -> dict[str, Any]:
        """Make a user a platform administrator (their sign-in sees every tenant and the admin
        API), or no longer one. Tenants never can: only an operator, here."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(USERS)
                    .where(USERS.c.email == email.lower())
                    .values(platform_admin=grant)
                    .returning(USERS.c.id, USERS.c.email, USERS.c.platform_admin)
                )
            ).first()
        if row is None:
            raise SystemExit(f"no user has the email {email}")
        return dict(row._mapping)

    async def replay_to_webhook(self, endpoint_id: uuid.UUID, request: WebhookReplay) -> dict[str, Any]:
        """Queue a project's events again for one endpoint (by number or time), as the API does."""
        async with self.engine.begin() as conn:
            replayed = await replay_webhook(conn, Principal(actor=self.actor, project_id=None), endpoint_id, request)
        return replayed.model_dump()

    async def collect_max_deliveries(self) -> int:
        """Move each command the server gave up redelivering (its MAX_DELIVERIES advisory) into the
        dead letters, out of the commands stream; returns how many. The agent dead-letters a
        command itself after ``max_attempts``; this catches one whose every delivery crashed it."""
        s = self.subjects
        moved = 0
        for advisory in await self._messages(s.advisories_stream, s.max_deliveries(s.commands_stream)):
            notice = json.loads(advisory.data or b"{}")
            try:
                original = await self.js.get_msg(s.commands_stream, seq=notice["stream_seq"])
            except NotFoundError:
                original = None  # acked or withdrawn since: nothing waits any more
            if original is not None:
                reason = (
                    f"{RETRIES_EXHAUSTED} by the server after {notice.get('deliveries')} deliveries without an answer"
                )
                await self.js.publish(
                    s.dead_letter(s.command_host(original.subject or "")),
                    original.data or b"",
                    stream=s.dead_letter_stream,
                    headers={
                        "Nats-Msg-Id": f"{s.commands_stream}:{original.seq}",
                        "Pgplane-Reason": reason,
                        "Pgplane-Original-Subject": original.subject or "",
                        "Pgplane-Original-Sequence": str(original.seq),
                    },
                )
                await self.js.delete_msg(s.commands_stream, notice["stream_seq"])
                moved += 1
            await self.js.delete_msg(s.advisories_stream, advisory.seq or 0)
        return moved

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first: where it came from and why."""
        await self.collect_max_deliveries()
        found = []
        for msg in await self._messages(self.subjects.dead_letter_stream, self.subjects.all_dead_letters()):
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

    async def redrive_dead_letter(self, sequence: int) -> dict[str, Any]:
        """Run a command that kept failing again, as a new operation (once, however often asked)."""
        outbox = self._signing()
        msg = await self.js.get_msg(self.subjects.dead_letter_stream, seq=sequence)
        reason = (msg.headers or {}).get("Pgplane-Reason", "")
        if not reason.startswith(RETRIES_EXHAUSTED):
            raise recovery.RecoveryRefused(
                f"dead letter {sequence} was refused ({reason}), not failed: it is never run; discard it"
            )
        dead = Envelope.model_validate_json(msg.data or b"")
        async with self.engine.begin() as conn:
            unfinished = await recovery.in_flight(conn, dead.correlation_id)
            if unfinished:  # the server gave up delivering it before the agent could end it
                await recovery.note_retry(conn, outbox, dead, actor=self.actor)
            else:
                redriven = await recovery.redrive(conn, outbox, dead, actor=self.actor)
        if unfinished:
            subject = (msg.headers or {}).get("Pgplane-Original-Subject", "")
            await self._resend(subject, msg.data or b"", dead.correlation_id)
            return {"operation_id": str(dead.correlation_id), "retried": True}
        await self._publish_now()
        return {
            "operation_id": str(redriven.operation_id),
            "created": redriven.created,
            "retry_of": str(dead.correlation_id),
        }

    async def retry(self, operation_id: uuid.UUID) -> dict[str, Any]:
        """Send a stuck operation's command to its host again; the saga resumes where it stopped."""
        outbox = self._signing()
        async with self.engine.begin() as conn:
            subject, body = await recovery.stuck_command(conn, operation_id)
            await recovery.note_retry(conn, outbox, Envelope.model_validate_json(body), actor=self.actor)
        await self._resend(subject, body, operation_id)
        return {"operation_id": str(operation_id), "retried": True}

    async def _resend(self, subject: str, body: bytes, operation_id: uuid.UUID) -> None:
        """The same signed command again, under a new message id (past the duplicate window)."""
        msg_id = f"{operation_id}:1:retry:{uuid.uuid4().hex}"
        await self.js.publish(subject, body, stream=self.subjects.commands_stream, headers={"Nats-Msg-Id": msg_id})
        await self._publish_now()

    async def fail(self, operation_id: uuid.UUID, reason: str) -> dict[str, Any]:
        """End a stuck operation ``failed`` at once; its host is told to stop and undo it."""
        outbox = self._signing()
        async with self.engine.begin() as conn:
            await recovery.fail(conn, outbox, operation_id, actor=self.actor, reason=reason)
        withdrawn = await self._withdraw(operation_id)
        await self._publish_now()
        return {"operation_id": str(operation_id), "status": "failed", "commands_withdrawn": withdrawn}

    async def _withdraw(self, operation_id: uuid.UUID) -> int:
        """Delete the operation's command wherever it still waits for its host (a host that was down
        then never starts it; one already running is stopped by the cancel)."""
        withdrawn = 0
        for sequence, body in await self._queued_commands():
            try:
                envelope = Envelope.model_validate_json(body)
            except ValueError:
                continue
            if envelope.correlation_id == operation_id and envelope.sequence == 1:
                await self.js.delete_msg(self.subjects.commands_stream, sequence)
                withdrawn += 1
        return withdrawn

    async def _queued_commands(self) -> list[tuple[int, bytes]]:
        messages = await self._messages(self.subjects.commands_stream, self.subjects.all_commands())
        return [(msg.seq or 0, msg.data or b"") for msg in messages]

    async def _messages(self, stream: str, subject: str) -> list[RawStreamMsg]:
        """Every message of ``stream`` on ``subject``, in order (deleted ones skipped)."""
        info = await self.js.stream_info(stream)
        found, sequence = [], info.state.first_seq
        while info.state.messages and sequence <= info.state.last_seq:
            try:
                msg = await self.js.get_msg(stream, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                break
            found.append(msg)
            sequence = (msg.seq or sequence) + 1
        return found

    def _signing(self) -> Outbox:
        if self.outbox is None:
            raise recovery.RecoveryRefused("PGPLANE_COMMAND_SIGNING_KEY is required to send commands to a data host")
        return self.outbox

    async def _publish_now(self) -> None:
        """What the action queued goes out now, whether or not an API is running to relay it."""
        await OutboxRelay(self.engine, self.js, idempotency_ttl=timedelta(days=1)).drain()

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


T = TypeVar("T")


async def run_ops(settings: Settings, action: Callable[[Ops], Awaitable[T]]) -> T:
    """Run an operator action with the metadata database and the bus (as the operator user)."""
    signing = outbox(settings) if settings.command_signing_key is not None else None
    actor = f"operator:{getpass.getuser()}"
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        return await action(Ops(engine, nc.jetstream(), Subjects(namespace=settings.namespace), actor, signing))
