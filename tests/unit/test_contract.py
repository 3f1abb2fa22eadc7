"""The message contract and the secrets helpers, without servers."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from api.models import DatabaseCreate
from infra.secrets import SecretBox, new_host_key, new_secret_key, scram_verifier, seal, unseal
from schemas.asyncapi import bus_specification
from schemas.commands import SCRAM_VERIFIER, DeleteDatabase
from schemas.envelope import Envelope
from schemas.events import OperationStarted, ProjectCreated
from schemas.export import committed_public_schemas, committed_specification, json_schemas, public_json_schemas
from schemas.public_events import EventType, PublicData


def test_envelope_ids_are_deterministic() -> None:
    op, project = uuid.uuid4(), uuid.uuid4()
    event = OperationStarted(kind="create", database_id=uuid.uuid4())
    a = Envelope.wrap(event, correlation_id=op, sequence=3, actor="admin", project_id=project)
    b = Envelope.wrap(event, correlation_id=op, sequence=3, actor="admin", project_id=project)
    assert a.id == b.id and a.msg_id == f"{op}:3"
    assert Envelope.model_validate_json(a.model_dump_json()) == a


def test_envelope_refuses_unknown_types_and_bad_bodies() -> None:
    base = {
        "id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00Z",
        "correlation_id": str(uuid.uuid4()),
        "sequence": 1,
        "actor": "a",
        "project_id": str(uuid.uuid4()),
    }
    with pytest.raises(ValidationError):
        Envelope.model_validate(base | {"type": "pgplane.command.nope", "data": {}})
    with pytest.raises(ValidationError):
        Envelope.model_validate(base | {"type": DeleteDatabase.TYPE, "data": {"database_id": "x"}})


def test_json_schema_covers_every_message() -> None:
    schemas = json_schemas()
    assert {"envelope", "pgplane.command.create_database", "pgplane.database.created"} <= set(schemas)


def test_committed_public_event_schemas_match_the_code() -> None:
    """Regenerate with ``pgplane schemas export-public schemas/public`` after changing a public event."""
    assert set(PublicData.REGISTRY) == set(EventType)
    assert committed_public_schemas() == public_json_schemas()


def test_committed_asyncapi_document_matches_the_code() -> None:
    """Regenerate with ``pgplane schemas export-asyncapi schemas`` after changing a message or a subject."""
    document = committed_specification()
    assert document == bus_specification()
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["pgplane.command.create_database"]["address"] == "pgplane.cmd.{host_id}.database.create"


def test_scram_verifier_shape_and_salt() -> None:
    import re

    one, two = scram_verifier("secret"), scram_verifier("secret")
    assert re.match(SCRAM_VERIFIER, one) and one != two
    assert scram_verifier("pw", salt=b"0" * 16) == scram_verifier("pw", salt=b"0" * 16)


def test_sealed_password_opens_only_with_the_host_key_and_context() -> None:
    private, public = new_host_key()
    other_private, _ = new_host_key()
    sealed = seal("hunter2", public_key_b64=public, context="db-1")
    assert unseal(sealed, private_key_b64=private, context="db-1") == "hunter2"
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        unseal(sealed, private_key_b64=other_private, context="db-1")
    with pytest.raises(Exception):  # noqa: B017
        unseal(sealed, private_key_b64=private, context="db-2")


def test_secret_box_binds_ciphertext_to_its_row() -> None:
    box = SecretBox(new_secret_key())
    blob = box.encrypt("pw", context="a:1")
    assert b"pw" not in blob and box.decrypt(blob, context="a:1") == "pw"
    with pytest.raises(Exception):  # noqa: B017
        box.decrypt(blob, context="a:2")


@pytest.mark.parametrize("name", ["app", "a", "a-b_c9", "x" * 63])
def test_valid_names(name: str) -> None:
    assert DatabaseCreate(project_id=uuid.uuid4(), name=name).name == name


@pytest.mark.parametrize("name", ["", "A", "x" * 64, "a;b", "é", "postgres", "pg_x", "db_1"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError):
        DatabaseCreate(project_id=uuid.uuid4(), name=name)


def test_the_api_refuses_a_short_admin_token() -> None:
    from pydantic import SecretStr

    from entrypoints.processes import api
    from infra.settings import Settings
    from infra.signing import new_signing_key

    signing, _ = new_signing_key()
    settings = Settings(
        secret_key=SecretStr(new_secret_key()),
        host_public_key=new_host_key()[1],
        command_signing_key=SecretStr(signing),
        admin_token=SecretStr("too-short"),
    )
    with pytest.raises(SystemExit, match="at least 32 characters"):
        api.api(settings)


def test_the_payload_is_parsed_once_and_a_copy_with_other_data_parses_its_own() -> None:
    first, second = ProjectCreated(name="a", plan="free"), ProjectCreated(name="b", plan="free")
    envelope = Envelope.wrap(first, correlation_id=uuid.uuid4(), sequence=0, actor="t", project_id=uuid.uuid4())
    assert envelope.payload() is envelope.payload()
    other = envelope.model_copy(update={"data": second.model_dump()})
    assert (envelope.payload(), other.payload()) == (first, second)
