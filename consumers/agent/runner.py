"""Runs one command as a saga (``consumers.agent.sagas``), resuming from the ledger, compensating
on permanent failure.

The ledger decides everything: a finished operation re-publishes its recorded events and
does nothing else; one that crashed resumes at the first unrecorded step; one whose step
failed permanently (recorded as ``StepFailed``) goes on compensating, never forward again.

Each event is recorded before it is announced, and announced without the saga waiting for
JetStream's ack: an ``Announcer`` sends a run's events strictly in order, each after the ack of
the one before, while the saga goes on with its next step; the run ends only when the last ack
is in (the agent acks the command after that). A publish that fails stops the ones after it,
and the redelivered command re-publishes the whole history, in order, under the same ids.

Each step (and each undo) runs in its own span, a child of the command's; the events a run
records carry the trace context of the span they were made in, and re-published ones keep
theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import StatusCode

from consumers.agent.host import Host
from consumers.agent.ledger import Ledger
from consumers.agent.saga import Results, Saga
from consumers.agent.sagas import SAGAS, SagaFactory
from consumers.agent.work_dirs import TERMINAL, remove_operation_work
from infra import tracing
from infra.errors import DeadlineExceeded, PermanentError
from infra.faults import NO_FAULTS, Faults
from infra.metrics import timed_step
from schemas.commands import CreateDatabase, DatabaseCommand
from schemas.envelope import Envelope, Payload
from schemas.events import (
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
)

Publish = Callable[[Envelope], Awaitable[None]]
FIRST_AGENT_SEQUENCE = 2  # 0 is the API's OperationRequested, 1 the command itself


class Announcer:
    """A run's events published in order, each after the previous one's ack, none awaited by the saga."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._pending: list[asyncio.Task[None]] = []

    def announce(self, envelope: Envelope) -> None:
        previous = self._pending[-1] if self._pending else None

        async def after_previous() -> None:
            if previous is not None:
                await previous  # a failed publish stops every later one: the stream keeps the order
            await self._publish(envelope)

        self._pending = [t for t in self._pending if not t.done()] + [asyncio.create_task(after_previous())]

    async def flush(self) -> None:
        """Wait until every event announced so far is stored (or raise why one was not)."""
        if self._pending:
            await self._pending[-1]
        self._pending = []

    async def abandon(self) -> None:
        """The run failed: stop publishing (the redelivered command re-publishes its history)."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending = []


@dataclass(kw_only=True)
class SagaRunner:
    host: Host
    ledger: Ledger
    publish: Publish
    faults: Faults = NO_FAULTS
    sagas: Mapping[type[DatabaseCommand], SagaFactory] = field(default_factory=lambda: SAGAS)

    async def run(self, command: Envelope) -> None:
        run = await self._start(command)
        try:
            run.republish()
            if not run.finished:
                await self._drive(run)
            await run.announcer.flush()
        except BaseException:
            await run.announcer.abandon()
            raise
        await self._clean_up(command)

    async def _drive(self, run: _Run) -> None:
        if run.failed_step is None:
            cmd = run.cmd
            if not run.history and isinstance(cmd, CreateDatabase) and await self.ledger.is_deleted(cmd.database_id):
                await run.emit(OperationFailed, reason="the database was deleted; this stale create changes nothing")
                return
            if not run.history:
                await run.emit(OperationStarted)
            if await run.forward():
                return
        await run.compensate()

    async def dead_letter(self, command: Envelope, reason: str, *, detail: str | None = None) -> None:
        """Give up on a command that kept failing: undo what it did, then say ``failed``."""
        run = await self._start(command)
        try:
            run.republish()
            if not run.finished:
                try:
                    await run.undo_completed()
                except Exception as exc:
                    reason = (
                        f"{reason}; undoing its completed steps failed too:"
                        " what they made may still be on the data host"
                    )
                    detail = "; ".join(filter(None, [detail, f"undo: {type(exc).__name__}: {exc}"]))
                await run.emit(OperationFailed, reason=reason, detail=detail, dead_lettered=True)
            await run.announcer.flush()
        except BaseException:
            await run.announcer.abandon()
            raise
        await self._clean_up(command)

    async def _clean_up(self, command: Envelope) -> None:
        """The operation has ended: its scratch space goes, whatever interrupted the step that owned it."""
        await remove_operation_work(self.host.work_dir, command.correlation_id, self.host.admin_dsn)

    async def _start(self, command: Envelope) -> _Run:
        cmd = database_command(command)
        factory = self.sagas.get(type(cmd))
        if factory is None:
            raise PermanentError(f"no saga runs {command.type}")
        history = await self.ledger.history(command.correlation_id)
        return _Run(self, command, cmd, factory(self.host, cmd, command), history)


def database_command(command: Envelope) -> DatabaseCommand:
    cmd = command.payload()
    if not isinstance(cmd, DatabaseCommand):
        raise PermanentError(f"{command.type} is not a database command")
    return cmd


class _Run:
    def __init__(
        self, runner: SagaRunner, command: Envelope, cmd: DatabaseCommand, saga: Saga, history: list[Envelope]
    ) -> None:
        self.runner = runner
        self.command = command
        self.cmd = cmd
        self.saga = saga
        self.history = history
        self.announcer = Announcer(runner.publish)
        self._cancelled_by: str | None = None
        self._cancel_read = False
        """Whether ``_cancelled_by`` was read since the last step began (the last record reads it)."""

    @property
    def finished(self) -> bool:
        return bool(self.history) and self.history[-1].type in TERMINAL

    def _steps_with(self, event_type: str) -> list[str]:
        return [e.data["step"] for e in self.history if e.type == event_type]

    @property
    def failed_step(self) -> str | None:
        failed = self._steps_with(OperationStepFailed.TYPE)
        return failed[0] if failed else None

    def republish(self) -> None:
        for envelope in self.history:
            self.announcer.announce(envelope)

    async def emit(self, event: type[OperationEvent], **data: Any) -> None:
        await self._record(event(kind=self.cmd.KIND, database_id=self.cmd.database_id, **data))

    async def _record(self, payload: Payload) -> None:
        envelope = Envelope.wrap(
            payload,
            correlation_id=self.command.correlation_id,
            sequence=FIRST_AGENT_SEQUENCE + len(self.history),
            actor=self.command.actor,
            project_id=self.command.project_id,
            causation_id=self.command.id,
        )
        self._cancelled_by, self._cancel_read = await self.runner.ledger.record(envelope), True
        self.history.append(envelope)
        self.announcer.announce(envelope)

    async def _cancel_requested(self) -> str | None:
        """Who asked to stop the operation: as recording the last event read it, or (the first step
        a redelivered command resumes at) asked now."""
        if not self._cancel_read:
            self._cancelled_by = await self.runner.ledger.cancel_requested(self.command.correlation_id)
        self._cancel_read = False
        return self._cancelled_by

    def results(self) -> Results:
        """What the completed steps recorded, by step name."""
        return Results(
            {e.data["step"]: e.data.get("outputs", {}) for e in self.history if e.type == OperationStepCompleted.TYPE}
        )

    async def forward(self) -> bool:
        """Run the remaining steps; ``False`` when one failed permanently."""
        done = set(self._steps_with(OperationStepCompleted.TYPE))
        kind = self.cmd.KIND.value
        faults = self.runner.faults
        for step in self.saga.steps:
            if step.name in done:
                continue
            with tracing.span(f"step {step.name}", attributes={"pgplane.step": step.name}) as span:
                try:
                    if actor := await self._cancel_requested():
                        raise PermanentError(f"cancelled by {actor}")
                    faults.before_step(f"{kind}.{step.name}")
                    with timed_step(kind, step.name):
                        output = await step.do()
                except PermanentError as exc:
                    span.set_status(StatusCode.ERROR, str(exc))
                    ends_failed = isinstance(exc, DeadlineExceeded)
                    await self.emit(
                        OperationStepFailed, step=step.name, reason=str(exc), detail=exc.detail, ends_failed=ends_failed
                    )
                    return False
                faults.crash_point(f"{kind}.{step.name}.done")
                outputs = output.model_dump(mode="json") if output is not None else {}
                await self.emit(OperationStepCompleted, step=step.name, outputs=outputs)
                faults.crash_point(f"{kind}.{step.name}.recorded")
        await self._record(self.saga.succeeded(self.results()))
        return True

    async def undo_completed(self) -> None:
        """Undo completed steps in reverse; each undo is idempotent and recorded once."""
        done = set(self._steps_with(OperationStepCompleted.TYPE))
        undone = set(self._steps_with(OperationStepCompensated.TYPE))
        for step in reversed(self.saga.steps):
            if step.name not in done or step.name in undone:
                continue
            with tracing.span(f"undo {step.name}", attributes={"pgplane.step": step.name}):
                if step.undo is not None:
                    await step.undo()
                self.runner.faults.crash_point(f"{self.cmd.KIND.value}.{step.name}.undone")
                await self.emit(OperationStepCompensated, step=step.name)

    async def compensate(self) -> None:
        await self.undo_completed()
        failed = self.history[[e.type for e in self.history].index(OperationStepFailed.TYPE)]
        if failed.data.get("ends_failed"):
            await self.emit(OperationFailed, reason=failed.data["reason"])
        else:
            await self.emit(OperationCompensated, reason=failed.data["reason"], failed_step=failed.data["step"])
