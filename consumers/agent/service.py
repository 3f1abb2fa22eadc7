"""The agent process: a FastStream pull subscriber on this host's commands.

Ack policy is MANUAL: success acks, a retryable error naks with a growing delay, a command
delivered more than ``max_attempts`` times is dead-lettered (compensated, ``failed``, copied
to the DLQ stream) and acked, and an unreadable one goes to the DLQ at once. Commands for one
database run one at a time (``Lanes``); different databases run concurrently. Each verified
command is handled in a span whose parent is the command's ``traceparent``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes
from pydantic import ValidationError

from consumers.agent.host import Host
from consumers.agent.host_state import repair
from consumers.agent.key_service import KeyService
from consumers.agent.runner import SagaRunner, database_command
from consumers.agent.wal_archiver import host_event
from consumers.agent.work_dirs import sweep_work_dir
from infra import tracing
from infra.errors import PermanentError
from infra.faults import NO_FAULTS, Faults
from infra.logs import OPERATION_ID
from infra.metrics import COMMANDS, CONSUMER_PENDING, DEAD_LETTERS
from infra.settings import Settings
from infra.signing import CommandVerifier, SignatureRejected
from schemas.commands import CancelOperation, DatabaseCommand, RepairDatabase
from schemas.envelope import Envelope
from schemas.events import CommandRejected
from schemas.subjects import Subjects

log = logging.getLogger("pgplane.agent")
PUBLISH_TIMEOUT = 10.0


BackgroundJob = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Work beside the commands (WAL archiving, base backups, the heartbeat) that runs until stop."""


class Lanes:
    """One FIFO lock per database: its commands run one at a time, in arrival order."""

    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._holders: Counter[uuid.UUID] = Counter()

    @asynccontextmanager
    async def hold(self, key: uuid.UUID) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]


class Agent:
    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        host: Host,
        verifier: CommandVerifier,
        key_service: KeyService,
        inbox: str = "_INBOX",
        faults: Faults = NO_FAULTS,
    ) -> None:
        self.settings = settings
        self.key_service = key_service
        self.inbox = inbox
        """Where this agent's NATS user may receive replies (pulled commands arrive as replies)."""
        self.verifier = verifier
        self.subjects = Subjects(namespace=settings.namespace)
        self.broker = broker
        self.host = host
        self.ledger = host.ledger
        self.runner = SagaRunner(host=host, ledger=host.ledger, publish=self.publish_event, faults=faults)
        self.lanes = Lanes()
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def serve(self, stop: asyncio.Event, jobs: list[BackgroundJob]) -> None:
        """Consume this host's commands and run ``jobs`` beside them until ``stop`` is set."""
        await self.host.lock_down()
        await self.host.reroute()  # PgBouncer matches the ledger before any command runs
        await sweep_work_dir(self.host.work_dir, self.ledger, self.host.admin_dsn)
        host_id = self.settings.host_id

        @self.broker.subscriber(
            self.subjects.host_commands(host_id),
            stream=JStream(name=self.subjects.commands_stream, declare=False),
            durable=self.subjects.agent_durable(host_id),
            pull_sub=PullSub(batch_size=self.settings.agent_concurrency, timeout=1.0),
            max_workers=self.settings.agent_concurrency,
            ack_policy=AckPolicy.MANUAL,
            inbox_prefix=f"{self.inbox}.".encode(),
        )
        async def on_command(body: Any, msg: NatsMessage) -> None:
            await self.handle(msg)

        @self.broker.subscriber(self.subjects.key_service(host_id))
        async def on_key_request(body: Any, msg: NatsMessage) -> bytes:
            return await self.key_service.answer(msg.body, msg.raw_message.subject)

        await self.broker.start()
        log.info("agent for host %s consuming %s", host_id, self.subjects.host_commands(host_id))
        background = [asyncio.create_task(job(stop)) for job in jobs]
        await stop.wait()
        await asyncio.gather(*background)
        await self.broker.stop()

    async def publish_event(self, envelope: Envelope) -> None:
        await self.broker.publish(
            envelope.model_dump_json().encode(),
            self.subjects.event(envelope.type),
            stream=self.subjects.events_stream,
            headers={"Nats-Msg-Id": envelope.msg_id},
            timeout=PUBLISH_TIMEOUT,
        )

    async def handle(self, msg: NatsMessage) -> None:
        try:
            envelope = Envelope.model_validate_json(msg.body)
            self.verifier.verify(envelope, msg.raw_message.subject)  # before anything acts on it
            cmd = database_command(envelope)
        except SignatureRejected as exc:
            await self.reject(msg, str(exc))
            return
        except (ValidationError, ValueError, PermanentError) as exc:
            await self.reject(msg, f"unreadable command: {exc}")
            return
        OPERATION_ID.set(str(envelope.correlation_id))  # this task's logs carry the operation
        attributes: Attributes = {
            "pgplane.operation_id": str(envelope.correlation_id),
            "pgplane.delivery": msg.raw_message.metadata.num_delivered,
        }
        with tracing.span(
            f"handle {envelope.type}", parent=envelope.traceparent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            await self._handle_verified(msg, envelope, cmd, span)

    async def _handle_verified(self, msg: NatsMessage, envelope: Envelope, cmd: DatabaseCommand, span: Span) -> None:
        delivered = msg.raw_message.metadata.num_delivered
        if isinstance(cmd, CancelOperation):  # not in the lane: the operation it stops holds it
            await self.cancel(cmd.operation_id, envelope.actor)
            await msg.ack()
            return
        if isinstance(cmd, RepairDatabase):  # the reconciler asks again while the drift lasts
            try:
                async with self.lanes.hold(cmd.database_id):
                    await repair(self.host, envelope, cmd, self.publish_event)
            except Exception:
                log.warning("repairing database %s failed; the next report asks again", cmd.database_id, exc_info=True)
            await msg.ack()
            return
        CONSUMER_PENDING.labels(consumer="agent").set(msg.raw_message.metadata.num_pending)
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            async with self.lanes.hold(cmd.database_id):
                if delivered > self.settings.max_attempts:
                    await self.give_up(msg, envelope)
                    outcome = "dead_lettered"
                else:
                    await self.run_cancellable(envelope)
                    outcome = "done"
            await msg.ack()
            span.set_attribute("pgplane.outcome", outcome)
            COMMANDS.labels(kind=cmd.KIND.value, outcome=outcome).inc()
            log.info("command %s for database %s: %s", cmd.KIND.value, cmd.database_id, outcome)
        except Exception as exc:
            COMMANDS.labels(kind=cmd.KIND.value, outcome="retry").inc()
            span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            log.warning("command %s attempt %d failed: %r", envelope.correlation_id, delivered, exc)
            with suppress(Exception):
                await self.ledger.note_failure(envelope.correlation_id, f"{type(exc).__name__}: {exc}")
            await msg.nack(delay=self.settings.retry_delay_seconds * 2 ** min(delivered - 1, 5))
        finally:
            heartbeat.cancel()

    async def cancel(self, operation_id: uuid.UUID, actor: str) -> None:
        """Record who asked, then interrupt the running step; the runner then undoes what was done."""
        await self.ledger.request_cancel(operation_id, actor)
        if task := self.running.get(operation_id):
            task.cancel()

    async def run_cancellable(self, envelope: Envelope) -> None:
        """Run the saga as a task a cancel request can interrupt; the runner then sees the request,
        fails the interrupted step and undoes the completed ones."""
        task = asyncio.create_task(self.runner.run(envelope))
        self.running[envelope.correlation_id] = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self.running.pop(envelope.correlation_id, None)
        if task.cancelled():
            await self.runner.run(envelope)
        else:
            task.result()

    async def reject(self, msg: NatsMessage, reason: str) -> None:
        """A command we will never run: to the dead letters, reported as ``command.rejected``, acked."""
        meta = msg.raw_message.metadata
        await self.to_dead_letters(msg, reason)
        rejected = CommandRejected(
            host_id=self.settings.host_id,
            subject=msg.raw_message.subject,
            stream_sequence=meta.sequence.stream,
            reason=reason,
        )
        await self.publish_event(
            host_event(rejected, host_id=self.settings.host_id, key=f"rejected:{meta.sequence.stream}")
        )
        await msg.ack()

    async def give_up(self, msg: NatsMessage, envelope: Envelope) -> None:
        last = await self.ledger.last_error(envelope.correlation_id) or "the agent stopped while running it"
        reason = f"dead-lettered after {self.settings.max_attempts} attempts: the data host kept failing to run it"
        await self.runner.dead_letter(envelope, reason, detail=last)
        await self.to_dead_letters(msg, f"{reason}: {last}")

    async def to_dead_letters(self, msg: NatsMessage, reason: str) -> None:
        meta = msg.raw_message.metadata
        DEAD_LETTERS.labels(why="retries exhausted" if reason.startswith("dead-lettered") else "refused").inc()
        log.error("dead-lettering stream sequence %d: %s", meta.sequence.stream, reason)
        await self.broker.publish(
            msg.body,
            self.subjects.dead_letter(self.settings.host_id),
            stream=self.subjects.dead_letter_stream,
            headers={
                "Nats-Msg-Id": f"{meta.stream}:{meta.sequence.stream}",
                "Pgplane-Reason": reason[:1000],
                "Pgplane-Original-Subject": msg.raw_message.subject,
                "Pgplane-Original-Sequence": str(meta.sequence.stream),
            },
            timeout=PUBLISH_TIMEOUT,
        )

    async def _keep_alive(self, msg: NatsMessage) -> None:
        while True:
            await asyncio.sleep(self.settings.ack_wait_seconds / 3)
            await msg.in_progress()
