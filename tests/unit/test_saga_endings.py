"""How a saga ends when a step fails: undone in reverse, then ``compensated`` — or ``failed``
when the step ran past its deadline — and a cancel request stops it before the next step."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from consumers.agent import runner as runner_module
from consumers.agent.ledger import Ledger
from consumers.agent.runner import SagaRunner
from consumers.agent.sagas import Host, Step
from infra.errors import DeadlineExceeded, PermanentError
from schemas.commands import ResetDatabase
from schemas.envelope import Envelope


class FakeLedger:
    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self.cancelled_by: str | None = None

    async def history(self, operation_id: uuid.UUID) -> list[Envelope]:
        return [e for e in self.events if e.correlation_id == operation_id]

    async def record(self, envelope: Envelope) -> None:
        self.events.append(envelope)

    async def cancel_requested(self, operation_id: uuid.UUID) -> str | None:
        return self.cancelled_by


def command() -> Envelope:
    database_id = uuid.uuid4()
    reset = ResetDatabase(database_id=database_id, dbname=f"db_{database_id.hex}", role=f"u_{database_id.hex}")
    return Envelope.wrap(reset, correlation_id=uuid.uuid4(), sequence=1, actor="test", project_id=uuid.uuid4())


async def run_with(monkeypatch: pytest.MonkeyPatch, steps: list[Step], ledger: FakeLedger) -> list[str]:
    monkeypatch.setattr(runner_module, "_steps", lambda *_: steps)
    published: list[Envelope] = []

    async def publish(envelope: Envelope) -> None:
        published.append(envelope)

    saga = SagaRunner(host=cast(Host, object()), ledger=cast(Ledger, ledger), publish=publish)
    await saga.run(command())
    return [e.type.removeprefix("pgplane.operation.") for e in published]


def recorder(done: list[str], name: str, error: Exception | None = None) -> Step:
    async def do() -> dict[str, Any]:
        if error is not None:
            raise error
        done.append(name)
        return {}

    async def undo() -> None:
        done.append(f"undo {name}")

    return Step(name, do, undo)


async def test_a_permanent_failure_is_compensated(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    steps = [recorder(done, "a"), recorder(done, "b"), recorder(done, "c", PermanentError("no"))]
    types = await run_with(monkeypatch, steps, FakeLedger())
    assert done == ["a", "b", "undo b", "undo a"]
    assert types[-1] == "compensated"


async def test_a_deadline_is_undone_and_ends_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    steps = [recorder(done, "a"), recorder(done, "b", DeadlineExceeded("the restore did not finish within 1 s"))]
    ledger = FakeLedger()
    types = await run_with(monkeypatch, steps, ledger)
    assert done == ["a", "undo a"]
    assert types[-1] == "failed"
    assert "did not finish" in ledger.events[-1].data["reason"]


async def test_a_cancel_request_stops_before_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    ledger = FakeLedger()

    async def first() -> None:
        done.append("a")
        ledger.cancelled_by = "token:someone"

    async def undo_first() -> None:
        done.append("undo a")

    steps = [Step("a", first, undo_first), recorder(done, "b")]
    types = await run_with(monkeypatch, steps, ledger)
    assert done == ["a", "undo a"]
    assert types[-1] == "compensated"
    assert ledger.events[-1].data["reason"] == "cancelled by token:someone"
