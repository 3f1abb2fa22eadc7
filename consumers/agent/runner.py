"""Runs one command as a saga, resuming from the ledger, compensating on permanent failure.

The ledger decides everything: a finished operation re-publishes its recorded events and
does nothing else; one that crashed resumes at the first unrecorded step; one whose step
failed permanently (recorded as ``StepFailed``) goes on compensating, never forward again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consumers.agent.backups import backup_steps
from consumers.agent.ledger import Ledger
from consumers.agent.pitr import pitr_steps
from consumers.agent.sagas import Host, Step, steps_for
from infra.errors import DeadlineExceeded, PermanentError
from infra.faults import NO_FAULTS, Faults
from schemas.commands import BackupCommand, CreateDatabase, DatabaseCommand, PointInTimeCommand
from schemas.envelope import Envelope
from schemas.events import (
    SUCCEEDED,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
)

Publish = Callable[[Envelope], Awaitable[None]]
TERMINAL = {OperationFailed.TYPE, OperationCompensated.TYPE} | {event.TYPE for event in SUCCEEDED.values()}
FIRST_AGENT_SEQUENCE = 2  # 0 is the API's OperationRequested, 1 the command itself


@dataclass(kw_only=True)
class SagaRunner:
    host: Host
    ledger: Ledger
    publish: Publish
    faults: Faults = NO_FAULTS

    async def run(self, command: Envelope) -> None:
        cmd = database_command(command)
        run = _Run(self, command, cmd, await self.ledger.history(command.correlation_id))
        await run.republish()
        if run.finished:
            return
        if run.failed_step is None:
            if not run.history and isinstance(cmd, CreateDatabase) and await self.ledger.is_deleted(cmd.database_id):
                await run.emit(OperationFailed, reason="the database was deleted; this stale create changes nothing")
                return
            if not run.history:
                await run.emit(OperationStarted)
            if await run.forward():
                return
        await run.compensate()

    async def dead_letter(self, command: Envelope, reason: str) -> None:
        """Give up on a command that kept failing: undo what it did, then say ``failed``."""
        cmd = database_command(command)
        run = _Run(self, command, cmd, await self.ledger.history(command.correlation_id))
        await run.republish()
        if run.finished:
            return
        try:
            await run.undo_completed()
        except Exception as exc:
            reason = f"{reason}; compensation incomplete ({exc}), the reconciler will report the drift"
        await run.emit(OperationFailed, reason=reason, dead_lettered=True)


def database_command(command: Envelope) -> DatabaseCommand:
    cmd = command.payload()
    if not isinstance(cmd, DatabaseCommand):
        raise PermanentError(f"{command.type} is not a database command")
    return cmd


def _steps(host: Host, cmd: DatabaseCommand, command: Envelope) -> list[Step]:
    if isinstance(cmd, BackupCommand):
        return backup_steps(host, cmd, command)
    if isinstance(cmd, PointInTimeCommand):
        return pitr_steps(host, cmd, command)
    return steps_for(host, cmd)


class _Run:
    def __init__(self, runner: SagaRunner, command: Envelope, cmd: DatabaseCommand, history: list[Envelope]) -> None:
        self.runner = runner
        self.command = command
        self.cmd = cmd
        self.history = history
        self.steps: list[Step] = _steps(runner.host, cmd, command)

    @property
    def finished(self) -> bool:
        return bool(self.history) and self.history[-1].type in TERMINAL

    def _steps_with(self, event_type: str) -> list[str]:
        return [e.data["step"] for e in self.history if e.type == event_type]

    @property
    def failed_step(self) -> str | None:
        failed = self._steps_with(OperationStepFailed.TYPE)
        return failed[0] if failed else None

    async def republish(self) -> None:
        for envelope in self.history:
            await self.runner.publish(envelope)

    async def emit(self, event: type[OperationEvent], **data: object) -> None:
        envelope = Envelope.wrap(
            event(kind=self.cmd.KIND, database_id=self.cmd.database_id, **data),
            correlation_id=self.command.correlation_id,
            sequence=FIRST_AGENT_SEQUENCE + len(self.history),
            actor=self.command.actor,
            project_id=self.command.project_id,
            causation_id=self.command.id,
        )
        await self.runner.ledger.record(envelope)
        self.history.append(envelope)
        await self.runner.publish(envelope)

    def outputs(self) -> dict[str, Any]:
        """What the completed steps produced, merged in step order."""
        merged: dict[str, Any] = {}
        for event in self.history:
            if event.type == OperationStepCompleted.TYPE:
                merged |= event.data.get("outputs", {})
        return merged

    async def forward(self) -> bool:
        """Run the remaining steps; ``False`` when one failed permanently."""
        done = set(self._steps_with(OperationStepCompleted.TYPE))
        kind = self.cmd.KIND.value
        for step in self.steps:
            if step.name in done:
                continue
            try:
                if actor := await self.runner.ledger.cancel_requested(self.command.correlation_id):
                    raise PermanentError(f"cancelled by {actor}")
                self.runner.faults.before_step(f"{kind}.{step.name}")
                outputs = await step.do()
            except PermanentError as exc:
                ends_failed = isinstance(exc, DeadlineExceeded)
                await self.emit(OperationStepFailed, step=step.name, reason=str(exc), ends_failed=ends_failed)
                return False
            self.runner.faults.crash_point(f"{kind}.{step.name}.done")
            await self.emit(OperationStepCompleted, step=step.name, outputs=outputs or {})
            self.runner.faults.crash_point(f"{kind}.{step.name}.recorded")
        success = SUCCEEDED[self.cmd.KIND]
        fields = {k: v for k, v in self.outputs().items() if k in success.model_fields}
        await self.emit(success, **fields | self.cmd.outcome())
        return True

    async def undo_completed(self) -> None:
        """Undo completed steps in reverse; each undo is idempotent and recorded once."""
        done = set(self._steps_with(OperationStepCompleted.TYPE))
        undone = set(self._steps_with(OperationStepCompensated.TYPE))
        for step in reversed(self.steps):
            if step.name not in done or step.name in undone:
                continue
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
