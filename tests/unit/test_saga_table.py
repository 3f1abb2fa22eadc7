"""The saga table: every command has exactly one saga, whose steps have unique names and whose
success event is the one the contract names for its kind, built from the steps' typed outputs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from consumers.agent.host import Host
from consumers.agent.saga import Results, StepOutput
from consumers.agent.sagas import SAGAS
from consumers.agent.steps.backups import DrillResult, StoredDump
from consumers.agent.steps.databases import WritesEnded
from schemas.commands import CancelOperation, DatabaseCommand, OperationKind, RepairDatabase
from schemas.envelope import Envelope, Payload
from schemas.events import SUCCEEDED

HOST = cast(Host, SimpleNamespace(work_dir=Path("/nonexistent"), admin_dsn="postgresql://x@127.0.0.1/postgres"))
MOMENT = datetime(2026, 11, 1, tzinfo=UTC)
OUTPUTS: dict[str, StepOutput] = {
    "dump_uploaded": StoredDump(
        object_key="k", size_bytes=2, dump_bytes=1, sha256="a" * 64, key_id="k1", duration_ms=3
    ),
    "restore_drilled": DrillResult(duration_ms=4, tables=5),
    "route_removed": WritesEnded(writes_ended_at=MOMENT),
}


def command(kind: type[DatabaseCommand]) -> tuple[DatabaseCommand, Envelope]:
    """A command of ``kind`` with every field filled (unvalidated: only the saga's wiring is tested)."""
    fields: dict[str, Any] = {name: None for name in kind.model_fields}
    database_id = uuid.uuid4()
    fields |= {
        "database_id": database_id,
        "dbname": f"db_{database_id.hex}",
        "role": f"u_{database_id.hex}",
        "backup_id": uuid.uuid4(),
        "source_database_id": uuid.uuid4(),
        "point_in_time": MOMENT,
        "credentials_version": 2,
        "reason": "requested",
    }
    cmd = kind.model_construct(**{k: v for k, v in fields.items() if k in kind.model_fields})
    envelope = Envelope.model_construct(
        id=uuid.uuid4(),
        type=kind.TYPE,
        occurred_at=MOMENT,
        correlation_id=uuid.uuid4(),
        sequence=1,
        actor="test",
        project_id=uuid.uuid4(),
        data={},
    )
    return cmd, envelope


def test_every_command_but_cancel_and_repair_has_a_saga() -> None:
    commands = {model for model in Payload.REGISTRY.values() if issubclass(model, DatabaseCommand)}
    not_sagas: set[type[DatabaseCommand]] = {CancelOperation, RepairDatabase}
    assert set(SAGAS) == commands - not_sagas
    assert {kind.KIND for kind in SAGAS} == set(OperationKind) - {OperationKind.CANCEL, OperationKind.REPAIR}


@pytest.mark.parametrize("kind", list(SAGAS), ids=lambda kind: kind.KIND.value)
def test_each_saga_ends_with_its_success_event(kind: type[DatabaseCommand]) -> None:
    cmd, envelope = command(kind)
    saga = SAGAS[kind](HOST, cmd, envelope)
    names = [step.name for step in saga.steps]
    assert len(names) == len(set(names)), names
    outputs = {name: OUTPUTS[name].model_dump(mode="json") for name in names if name in OUTPUTS}
    event = saga.succeeded(Results(outputs))
    assert type(event) is SUCCEEDED[kind.KIND]
    assert (event.kind, event.database_id) == (kind.KIND, cmd.database_id)


def test_a_deleted_database_says_when_its_writes_ended() -> None:
    from schemas.commands import DeleteDatabase
    from schemas.events import DatabaseDeleted

    cmd, envelope = command(DeleteDatabase)
    saga = SAGAS[DeleteDatabase](HOST, cmd, envelope)
    event = saga.succeeded(Results({"route_removed": OUTPUTS["route_removed"].model_dump(mode="json")}))
    assert isinstance(event, DatabaseDeleted) and event.writes_ended_at == MOMENT


def test_restores_into_a_new_database_make_it_like_a_create() -> None:
    from schemas.commands import CreateDatabase, RestoreBackupToNewDatabase, RestorePointInTimeToNewDatabase

    def names(kind: type[DatabaseCommand]) -> list[str]:
        cmd, envelope = command(kind)
        return [step.name for step in SAGAS[kind](HOST, cmd, envelope).steps]

    create = names(CreateDatabase)
    for restore in (RestoreBackupToNewDatabase, RestorePointInTimeToNewDatabase):
        made = [name for name in names(restore) if name in create]
        assert made == create, restore
