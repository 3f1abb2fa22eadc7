"""Commands: orders sent to a data host. They never carry a plaintext password."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, Field

from schemas.envelope import Payload

SCRAM_VERIFIER = r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$"
OBJECT_KEY = r"^backups/[0-9a-f-]{36}/[0-9a-f-]{36}/[0-9a-f-]{36}\.pgdump\.enc$"
SHA256_HEX = r"^[0-9a-f]{64}$"
WAL_SEGMENT = r"^[0-9A-F]{24}$"
KEY_ID = r"^[a-z0-9-]{1,32}$"


def backup_object_key(project_id: uuid.UUID, database_id: uuid.UUID, backup_id: uuid.UUID) -> str:
    """Deterministic per backup: a redelivered backup command rewrites the same object."""
    return f"backups/{project_id}/{database_id}/{backup_id}.pgdump.enc"


def encryption_context(project_id: uuid.UUID, database_id: uuid.UUID, backup_id: uuid.UUID) -> str:
    """What every encrypted chunk of a backup is bound to: another backup's object cannot pass for it."""
    return f"pgplane-backup:{project_id}:{database_id}:{backup_id}"


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
    BACKUP = "backup"
    """``pg_dump -Fc`` streamed through encryption into the object store."""
    RESTORE = "restore"
    """A backup restored into a scratch database, then swapped in for the database in place."""
    RESTORE_NEW_DATABASE = "restore_new_database"
    """A new database (own role and password) made from a backup; the source is untouched."""
    VERIFY_BACKUP = "verify_backup"
    """A restore drill: the backup restored into a scratch database, checked, dropped."""
    DELETE_BACKUP = "delete_backup"
    """The backup's object removed from the store (on request or by retention)."""
    PITR_RESTORE = "pitr_restore"
    """The database as it was at a point in time (base backup + archived WAL), swapped in in place."""
    PITR_RESTORE_NEW_DATABASE = "pitr_restore_new_database"
    """A new database made from the database as it was at a point in time."""
    SUSPEND = "suspend"
    """Its organization is suspended: the role may not log in, its sessions end; the data stays."""
    RESUME = "resume"
    """The role may log in again."""
    CANCEL = "cancel"
    """Not an operation of its own: asks the agent to stop another one."""
    REPAIR = "repair"
    """Not an operation either: puts back what pgplane gave a database after drift (``RepairDatabase``)."""


class DriftKind(StrEnum):
    """How a data host differs from what pgplane recorded."""

    DATABASE_MISSING = "database_missing"
    """A database pgplane serves is not on its host (reported only: data may be lost)."""
    ROLE_MISSING = "role_missing"
    """A database's login role was dropped (repaired: made again with pgplane's password)."""
    VERIFIER_CHANGED = "verifier_changed"
    """A role's password was changed in SQL (repaired: pgplane's password set again)."""
    OWNER_CHANGED = "owner_changed"
    """A database belongs to another role than its own (repaired: given back to its role)."""
    ROUTE_MISSING = "route_missing"
    """PgBouncer does not route a database (repaired: routes rewritten from the agent's ledger)."""
    DATABASE_ORPHANED = "database_orphaned"
    """A tenant-named database pgplane does not serve (reported only: never dropped)."""
    ROLE_ORPHANED = "role_orphaned"
    """A tenant-named role no database of pgplane's uses (reported only)."""


def drift_object(kind: DriftKind, *, dbname: str, role: str) -> str:
    """What a drift of ``kind`` is about: the role for role drifts, else the database."""
    return role if kind in (DriftKind.ROLE_MISSING, DriftKind.VERIFIER_CHANGED, DriftKind.ROLE_ORPHANED) else dbname


REPAIRABLE = frozenset(
    {DriftKind.ROLE_MISSING, DriftKind.VERIFIER_CHANGED, DriftKind.OWNER_CHANGED, DriftKind.ROUTE_MISSING}
)
"""What pgplane repairs by itself: putting back what it gave, which changes no tenant data."""


class DatabaseCommand(Payload):
    KIND: ClassVar[OperationKind]
    database_id: uuid.UUID
    dbname: str = Field(pattern=r"^db_[0-9a-f]{32}$")
    role: str = Field(pattern=r"^u_[0-9a-f]{32}$")


class NewDatabaseCommand(DatabaseCommand):
    """Makes a new database: its role's SCRAM verifier, the password sealed to the host, a limit."""

    password_verifier: str = Field(pattern=SCRAM_VERIFIER, repr=False)
    sealed_password: str = Field(repr=False, description="Sealed to the host key; for the login check only.")
    connection_limit: int = Field(ge=1, le=1000)


class CreateDatabase(NewDatabaseCommand):
    TYPE = "pgplane.command.create_database"
    KIND = OperationKind.CREATE


class DeleteDatabase(DatabaseCommand):
    TYPE = "pgplane.command.delete_database"
    KIND = OperationKind.DELETE


class ResetDatabase(DatabaseCommand):
    TYPE = "pgplane.command.reset_database"
    KIND = OperationKind.RESET


class SuspendDatabase(DatabaseCommand):
    TYPE = "pgplane.command.suspend_database"
    KIND = OperationKind.SUSPEND


class ResumeDatabase(DatabaseCommand):
    TYPE = "pgplane.command.resume_database"
    KIND = OperationKind.RESUME


class RotateCredentials(DatabaseCommand):
    TYPE = "pgplane.command.rotate_credentials"
    KIND = OperationKind.ROTATE_CREDENTIALS
    password_verifier: str = Field(pattern=SCRAM_VERIFIER, repr=False)
    sealed_password: str = Field(repr=False, description="Sealed to the host key; for the login check only.")
    credentials_version: int = Field(ge=2)


class BackupCommand(DatabaseCommand):
    """Every backup command names the backup and its deterministic object key."""

    backup_id: uuid.UUID
    object_key: str = Field(pattern=OBJECT_KEY)


class BackupDatabase(BackupCommand):
    TYPE = "pgplane.command.backup_database"
    KIND = OperationKind.BACKUP
    max_bytes: int = Field(ge=1, description="The plan's backup size limit (dump bytes).")


class StoredBackupCommand(BackupCommand):
    """Acts on a completed backup: what the stored object must hash to and which key sealed it."""

    source_database_id: uuid.UUID
    sha256: str = Field(pattern=SHA256_HEX)
    key_id: str = Field(pattern=KEY_ID)


class RestoreBackup(StoredBackupCommand):
    TYPE = "pgplane.command.restore_backup"
    KIND = OperationKind.RESTORE


class RestoreBackupToNewDatabase(StoredBackupCommand, NewDatabaseCommand):
    TYPE = "pgplane.command.restore_backup_to_new_database"
    KIND = OperationKind.RESTORE_NEW_DATABASE


class VerifyBackup(StoredBackupCommand):
    TYPE = "pgplane.command.verify_backup"
    KIND = OperationKind.VERIFY_BACKUP


class DeleteBackup(BackupCommand):
    TYPE = "pgplane.command.delete_backup"
    KIND = OperationKind.DELETE_BACKUP
    reason: str = Field(pattern=r"^(requested|retention)$")


class PointInTimeCommand(DatabaseCommand):
    """Restore ``source_dbname`` as it was at ``point_in_time`` from a base backup and archived WAL."""

    point_in_time: AwareDatetime
    base_backup_id: uuid.UUID
    source_database_id: uuid.UUID
    source_dbname: str = Field(pattern=r"^db_[0-9a-f]{32}$")


class RestorePointInTime(PointInTimeCommand):
    TYPE = "pgplane.command.restore_point_in_time"
    KIND = OperationKind.PITR_RESTORE


class RestorePointInTimeToNewDatabase(PointInTimeCommand, NewDatabaseCommand):
    TYPE = "pgplane.command.restore_point_in_time_to_new_database"
    KIND = OperationKind.PITR_RESTORE_NEW_DATABASE


class CancelOperation(DatabaseCommand):
    """Stop a running operation; it undoes what it did and ends ``compensated``."""

    TYPE = "pgplane.command.cancel_operation"
    KIND = OperationKind.CANCEL
    operation_id: uuid.UUID


class RepairDatabase(DatabaseCommand):
    """Put back what pgplane gave a database (from the agent's ledger): its role, its password,
    its route. Idempotent; sent by the reconciler for every report that still shows the drift."""

    TYPE = "pgplane.command.repair_database"
    KIND = OperationKind.REPAIR
    repairs: list[DriftKind] = Field(min_length=1)


class RevealDataKey(Payload):
    """A request to a data host's key service (not a saga): the data key of one stored backup,
    sealed to ``reply_key`` so only the asking API process can read it. Signed like a command."""

    TYPE = "pgplane.request.reveal_data_key"
    backup_id: uuid.UUID
    key_id: str = Field(pattern=KEY_ID)
    salt: str = Field(pattern=r"^[A-Za-z0-9+/=]{44}$", description="Base64 of the backup's 32-byte salt.")
    reply_key: str = Field(description="Base64 X25519 public key the answer is sealed to.")
