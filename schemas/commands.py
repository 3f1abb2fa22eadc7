"""Commands: orders sent to a data host. They never carry a plaintext password."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from schemas.envelope import Payload

SCRAM_VERIFIER = r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$"


class OperationKind(StrEnum):
    """What an operation does to a database."""

    CREATE = "create"
    """Role with a SCRAM verifier, database owned by it, PgBouncer route, verified login."""
    DELETE = "delete"
    """Route removed, sessions ended, database and role dropped."""
    RESET = "reset"
    """All data dropped; name, role and credentials kept."""
    ROTATE_CREDENTIALS = "rotate_credentials"
    """New password verifier; the old password stops working."""


class DatabaseCommand(Payload):
    KIND: ClassVar[OperationKind]
    database_id: uuid.UUID
    dbname: str = Field(pattern=r"^db_[0-9a-f]{32}$")
    role: str = Field(pattern=r"^u_[0-9a-f]{32}$")


class CreateDatabase(DatabaseCommand):
    TYPE = "pgplane.command.create_database"
    KIND = OperationKind.CREATE
    password_verifier: str = Field(pattern=SCRAM_VERIFIER, repr=False)
    sealed_password: str = Field(repr=False, description="Sealed to the host key; for the login check only.")
    connection_limit: int = Field(ge=1, le=1000)


class DeleteDatabase(DatabaseCommand):
    TYPE = "pgplane.command.delete_database"
    KIND = OperationKind.DELETE


class ResetDatabase(DatabaseCommand):
    TYPE = "pgplane.command.reset_database"
    KIND = OperationKind.RESET


class RotateCredentials(DatabaseCommand):
    TYPE = "pgplane.command.rotate_credentials"
    KIND = OperationKind.ROTATE_CREDENTIALS
    password_verifier: str = Field(pattern=SCRAM_VERIFIER, repr=False)
    sealed_password: str = Field(repr=False, description="Sealed to the host key; for the login check only.")
    credentials_version: int = Field(ge=2)
