"""How a saga ends when a step fails: undone in reverse, then ``compensated`` — or ``failed``
when the step ran past its deadline — and a cancel request stops it before the next step. However
it ends, nothing of its scratch space stays behind."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from faststream.nats import NatsBroker

from consumers.agent.host import Host
from consumers.agent.key_service import KeyService
from consumers.agent.runner import SagaRunner
from consumers.agent.saga import Saga, Step
from consumers.agent.service import Agent
from infra.errors import DeadlineExceeded, PermanentError
from infra.settings import Settings
from infra.signing import CommandVerifier, new_signing_key
from schemas.commands import ResetDatabase
from schemas.envelope import Envelope
from schemas.events import DatabaseReset


class FakeLedger:
    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self.cancelled_by: str | None = None

    async def request_cancel(self, operation_id: uuid.UUID, actor: str) -> None:
        self.cancelled_by = self.cancelled_by or actor

    async def history(self, operation_id: uuid.UUID) -> list[Envelope]:
        return [e for e in self.events if e.correlation_id == operation_id]

    async def record(self, envelope: Envelope) -> str | None:
        self.events.append(envelope)
        return self.cancelled_by

    async def cancel_requested(self, operation_id: uuid.UUID) -> str | None:
        return self.cancelled_by


def command() -> Envelope:
    database_id = uuid.uuid4()
    reset = ResetDatabase(database_id=database_id, dbname=f"db_{database_id.hex}", role=f"u_{database_id.hex}")
    return Envelope.wrap(reset, correlation_id=uuid.uuid4(), sequence=1, actor="test", project_id=uuid.uuid4())


def fake_host(ledger: FakeLedger, work_dir: Path = Path("/nonexistent")) -> Host:
    return cast(Host, SimpleNamespace(ledger=ledger, work_dir=work_dir, admin_dsn="postgresql://unused"))


def runner_for(steps: list[Step], host: Host, published: list[Envelope]) -> SagaRunner:
    async def publish(envelope: Envelope) -> None:
        published.append(envelope)

    def reset(host: Host, cmd: ResetDatabase, op: Envelope) -> Saga:
        return Saga(steps, succeeded=lambda _: DatabaseReset(kind=cmd.KIND, database_id=cmd.database_id))

    return SagaRunner(host=host, ledger=host.ledger, publish=publish, sagas={ResetDatabase: reset})


async def run_with(steps: list[Step], ledger: FakeLedger) -> list[str]:
    published: list[Envelope] = []
    await runner_for(steps, fake_host(ledger), published).run(command())
    return [e.type.removeprefix("pgplane.operation.") for e in published]


def recorder(done: list[str], name: str, error: Exception | None = None) -> Step:
    async def do() -> None:
        if error is not None:
            raise error
        done.append(name)

    async def undo() -> None:
        done.append(f"undo {name}")

    return Step(name, do, undo)


async def test_a_permanent_failure_is_compensated() -> None:
    done: list[str] = []
    steps = [recorder(done, "a"), recorder(done, "b"), recorder(done, "c", PermanentError("no"))]
    types = await run_with(steps, FakeLedger())
    assert done == ["a", "b", "undo b", "undo a"]
    assert types[-1] == "compensated"


async def test_a_deadline_is_undone_and_ends_failed() -> None:
    done: list[str] = []
    steps = [recorder(done, "a"), recorder(done, "b", DeadlineExceeded("the restore did not finish within 1 s"))]
    ledger = FakeLedger()
    types = await run_with(steps, ledger)
    assert done == ["a", "undo a"]
    assert types[-1] == "failed"
    assert "did not finish" in ledger.events[-1].data["reason"]


async def test_a_cancel_request_stops_before_the_next_step() -> None:
    done: list[str] = []
    ledger = FakeLedger()

    async def first() -> None:
        done.append("a")
        ledger.cancelled_by = "token:someone"

    async def undo_first() -> None:
        done.append("undo a")

    steps = [Step("a", first, undo_first), recorder(done, "b")]
    types = await run_with(steps, ledger)
    assert done == ["a", "undo a"]
    assert types[-1] == "compensated"
    assert ledger.events[-1].data["reason"] == "cancelled by token:someone"


async def test_a_resumed_saga_asks_whether_it_was_cancelled_before_its_first_step() -> None:
    """A cancel that came while the agent was down: no record of this run has read it yet."""
    done: list[str] = []
    ledger, op = FakeLedger(), command()
    steps = [recorder(done, "a"), recorder(done, "b")]
    published: list[Envelope] = []
    await runner_for(steps, fake_host(ledger), published).run(op)
    ledger.events = [e for e in ledger.events if e.data.get("step") == "a" or "started" in e.type]
    ledger.cancelled_by, done[:] = "token:someone", []

    await runner_for(steps, fake_host(ledger), published).run(op)  # the command, redelivered
    assert done == ["undo a"]
    assert published[-1].type == "pgplane.operation.compensated"
    assert published[-1].data["reason"] == "cancelled by token:someone"


def downloading(work_dir: Path, done: list[str]) -> Step:
    """A slow download into the work directory whose own clean-up, like the real one's, can itself
    be interrupted by a second cancel."""

    async def do() -> None:
        work_dir.mkdir(parents=True)
        (work_dir / "000000010000000000000001").write_bytes(b"wal" * 1000)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # a second cancel lands here
            shutil.rmtree(work_dir)
            raise
        done.append("downloaded")

    return Step("wal_fetched", do)


async def test_a_failed_operation_leaves_no_scratch_space(tmp_path: Path) -> None:
    op = command()
    work_dir = tmp_path / op.correlation_id.hex

    async def download() -> None:
        work_dir.mkdir()
        (work_dir / "backup.enc").write_bytes(b"x")
        raise PermanentError("the backup failed its checksum")

    published: list[Envelope] = []
    await runner_for([Step("backup_downloaded", download)], fake_host(FakeLedger(), tmp_path), published).run(op)
    assert published[-1].type == "pgplane.operation.compensated"
    assert list(tmp_path.iterdir()) == []


async def test_cancels_in_quick_succession_leave_no_scratch_space(tmp_path: Path) -> None:
    ledger, done, published = FakeLedger(), [], []  # type: ignore[var-annotated]
    host = fake_host(ledger, tmp_path)
    op = command()
    _, verify = new_signing_key()
    agent = Agent(
        settings=Settings(),
        broker=cast(NatsBroker, None),
        host=host,
        verifier=CommandVerifier(verify),
        key_service=cast(KeyService, None),
    )
    agent.runner = runner_for([downloading(tmp_path / op.correlation_id.hex, done)], host, published)
    running = asyncio.create_task(agent.run_cancellable(op))
    while not list(tmp_path.iterdir()):
        await asyncio.sleep(0.01)
    for _ in range(3):
        await agent.cancel(op.correlation_id, "token:impatient")
        await asyncio.sleep(0.05)
    await running
    assert published[-1].type == "pgplane.operation.compensated" and done == []
    assert published[-1].data["reason"] == "cancelled by token:impatient"
    assert list(tmp_path.iterdir()) == []


async def test_a_dead_letter_whose_undo_fails_says_what_may_be_left() -> None:
    ledger, published = FakeLedger(), []  # type: ignore[var-annotated]

    async def made() -> None:
        return None

    async def unmake() -> None:
        raise OSError("the data host does not answer")

    op = command()
    runner = runner_for([Step("role_created", made, unmake)], fake_host(ledger), published)
    await runner.run(op)  # succeeds; now pretend it kept failing after its first step instead
    ledger.events = [e for e in ledger.events if e.data.get("step") == "role_created" or "started" in e.type]
    await runner.dead_letter(op, "dead-lettered after 3 attempts: boom")
    reason = published[-1].data["reason"]
    assert published[-1].type == "pgplane.operation.failed" and published[-1].data["dead_lettered"]
    assert "undoing its completed steps failed too" in reason and "may still be on the data host" in reason
    assert "reconciler" not in reason
