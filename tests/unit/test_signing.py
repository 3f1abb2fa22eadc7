"""Command signatures: only an envelope signed by a listed key, unchanged, on the subject it was
signed for, passes; keys rotate by listing the new one beside the old."""

from __future__ import annotations

import uuid

import pytest

from infra.signing import CommandSigner, CommandVerifier, SignatureRejected, new_signing_key
from schemas.commands import DeleteDatabase
from schemas.envelope import Envelope

SUBJECT = "pgplane.cmd.host-1.database.delete"


def delete_command(database_id: uuid.UUID | None = None) -> Envelope:
    database_id = database_id or uuid.uuid4()
    command = DeleteDatabase(database_id=database_id, dbname=f"db_{database_id.hex}", role=f"u_{database_id.hex}")
    return Envelope.wrap(command, correlation_id=uuid.uuid4(), sequence=1, actor="token:x", project_id=uuid.uuid4())


def test_a_signed_command_verifies_after_a_round_trip_on_the_wire() -> None:
    signing, verify = new_signing_key("s1")
    signed = CommandSigner(signing).sign(delete_command(), SUBJECT)
    CommandVerifier(verify).verify(Envelope.model_validate_json(signed.model_dump_json()), SUBJECT)


def test_unsigned_forged_altered_and_misdirected_commands_are_rejected() -> None:
    signing, verify = new_signing_key("s1")
    other_signing, _ = new_signing_key("s1")
    verifier = CommandVerifier(verify)
    signed = CommandSigner(signing).sign(delete_command(), SUBJECT)
    other = delete_command()
    cases = {
        "unsigned": delete_command(),
        "signed by another key with our key id": CommandSigner(other_signing).sign(delete_command(), SUBJECT),
        "another database": signed.model_copy(update={"data": other.data}),
        "another project": signed.model_copy(update={"project_id": uuid.uuid4()}),
        "unknown key id": signed.model_copy(update={"key_id": "s9"}),
    }
    for case, envelope in cases.items():
        with pytest.raises(SignatureRejected):
            verifier.verify(envelope, SUBJECT)
            raise AssertionError(case)
    with pytest.raises(SignatureRejected):
        verifier.verify(signed, "pgplane.cmd.host-2.database.delete")  # replayed to another host


def test_keys_rotate() -> None:
    old_signing, old_verify = new_signing_key("s1")
    new_signing, new_verify = new_signing_key("s2")
    both = CommandVerifier(f"{old_verify},{new_verify}")
    for signing in (old_signing, new_signing):
        both.verify(CommandSigner(signing).sign(delete_command(), SUBJECT), SUBJECT)
    with pytest.raises(SignatureRejected):
        CommandVerifier(new_verify).verify(CommandSigner(old_signing).sign(delete_command(), SUBJECT), SUBJECT)
