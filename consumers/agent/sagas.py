"""The saga table: what the agent does for each command, step by step, with the undo of each step.

Read a saga top to bottom: each ``Step(name, do, undo)`` runs once its predecessors are recorded in
the ledger; when a step fails permanently, the completed ones are undone bottom up. The work
behind the steps lives in ``consumers.agent.steps``; the runner that drives sagas (ledger, retries,
compensation, crash recovery) in ``consumers.agent.runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.agent.host import Host
from consumers.agent.saga import Results, Saga, Step
from consumers.agent.steps.backups import BackupObject, DrillResult, NewBackup, StoredBackup, StoredDump
from consumers.agent.steps.databases import (
    DeletedTenantDatabase,
    NewTenantDatabase,
    RotatedTenantDatabase,
    TenantDatabase,
    WritesEnded,
)
from consumers.agent.steps.point_in_time import PointInTime
from consumers.agent.steps.swap import Swap
from schemas.commands import (
    BackupDatabase,
    CreateDatabase,
    DatabaseCommand,
    DeleteBackup,
    DeleteDatabase,
    ResetDatabase,
    RestoreBackup,
    RestoreBackupToNewDatabase,
    RestorePointInTime,
    RestorePointInTimeToNewDatabase,
    ResumeDatabase,
    RotateCredentials,
    SuspendDatabase,
    VerifyBackup,
)
from schemas.envelope import Envelope
from schemas.events import (
    BackupCompleted,
    BackupDeleted,
    BackupVerified,
    CredentialsRotated,
    DatabaseCreated,
    DatabaseDeleted,
    DatabaseReset,
    DatabaseRestored,
    DatabaseResumed,
    DatabaseSuspended,
)


def create_database(host: Host, cmd: CreateDatabase, op: Envelope) -> Saga:
    db = NewTenantDatabase(host, cmd)
    return Saga(
        [
            Step("role_created", db.create_role, db.drop_role),
            Step("database_created", db.create_database, db.drop_database),
            *_opened(db),
        ],
        succeeded=lambda _: DatabaseCreated(kind=cmd.KIND, database_id=cmd.database_id),
    )


def delete_database(host: Host, cmd: DeleteDatabase, op: Envelope) -> Saga:
    db = DeletedTenantDatabase(host, cmd)
    return Saga(
        [
            Step("tombstoned", db.tombstone, db.remove_tombstone),
            Step("route_removed", db.end_writes, db.restore_route),
            Step("database_dropped", db.drop_database),
            Step("role_dropped", db.drop_role),
        ],
        succeeded=lambda results: DatabaseDeleted(
            kind=cmd.KIND,
            database_id=cmd.database_id,
            writes_ended_at=results.get("route_removed", WritesEnded).writes_ended_at,
        ),
    )


def reset_database(host: Host, cmd: ResetDatabase, op: Envelope) -> Saga:
    db = TenantDatabase(host, cmd)
    return Saga(
        [
            Step("database_dropped", db.drop_database),
            Step("database_created", db.create_database),
            Step("public_revoked", db.revoke_public),
            Step("connections_reset", db.reset_connections),
        ],
        succeeded=lambda _: DatabaseReset(kind=cmd.KIND, database_id=cmd.database_id),
    )


def rotate_credentials(host: Host, cmd: RotateCredentials, op: Envelope) -> Saga:
    db = RotatedTenantDatabase(host, cmd)
    return Saga(
        [
            Step("password_set", db.set_password, db.restore_password),
            Step("route_updated", db.update_route, db.restore_previous_route),
            Step("sessions_ended", db.end_sessions),
            Step("login_verified", db.verify_login),
        ],
        succeeded=lambda _: CredentialsRotated(
            kind=cmd.KIND, database_id=cmd.database_id, credentials_version=cmd.credentials_version
        ),
    )


def suspend_database(host: Host, cmd: SuspendDatabase, op: Envelope) -> Saga:
    db = TenantDatabase(host, cmd)
    return Saga(
        [
            Step("logins_refused", db.refuse_logins, db.allow_logins),
            Step("sessions_ended", db.end_sessions),
        ],
        succeeded=lambda _: DatabaseSuspended(kind=cmd.KIND, database_id=cmd.database_id),
    )


def resume_database(host: Host, cmd: ResumeDatabase, op: Envelope) -> Saga:
    db = TenantDatabase(host, cmd)
    return Saga(
        [
            Step("logins_allowed", db.allow_logins, db.refuse_logins),
            Step("pool_reset", db.reset_connections),
        ],
        succeeded=lambda _: DatabaseResumed(kind=cmd.KIND, database_id=cmd.database_id),
    )


def back_up(host: Host, cmd: BackupDatabase, op: Envelope) -> Saga:
    backup = NewBackup(host, cmd, op)

    def completed(results: Results) -> BackupCompleted:
        dump = results.get("dump_uploaded", StoredDump)
        return BackupCompleted(
            kind=cmd.KIND,
            database_id=cmd.database_id,
            backup_id=cmd.backup_id,
            object_key=dump.object_key,
            size_bytes=dump.size_bytes,
            dump_bytes=dump.dump_bytes,
            sha256=dump.sha256,
            key_id=dump.key_id,
            duration_ms=dump.duration_ms,
        )

    return Saga([Step("dump_uploaded", backup.dump_and_upload, backup.delete_object)], succeeded=completed)


def restore_backup(host: Host, cmd: RestoreBackup, op: Envelope) -> Saga:
    backup, swap = StoredBackup(host, cmd, op), Swap(host, cmd, op)
    return Saga(
        [
            Step("backup_downloaded", backup.download_and_check, swap.remove_work_dir),
            Step("scratch_restored", backup.restore_scratch, swap.drop_scratch),
            *_swapped_in(swap),
        ],
        succeeded=lambda _: DatabaseRestored(kind=cmd.KIND, database_id=cmd.database_id, backup_id=cmd.backup_id),
    )


def restore_backup_to_new_database(host: Host, cmd: RestoreBackupToNewDatabase, op: Envelope) -> Saga:
    backup, swap, db = StoredBackup(host, cmd, op), Swap(host, cmd, op), NewTenantDatabase(host, cmd)
    return Saga(
        [
            Step("backup_downloaded", backup.download_and_check, swap.remove_work_dir),
            Step("role_created", db.create_role, db.drop_role),
            Step("scratch_restored", backup.restore_scratch, swap.drop_scratch),
            Step("database_created", swap.rename_into_place, db.drop_database),
            *_opened(db),
            Step("work_cleaned", swap.remove_work_dir),
        ],
        succeeded=lambda _: DatabaseRestored(kind=cmd.KIND, database_id=cmd.database_id, backup_id=cmd.backup_id),
    )


def verify_backup(host: Host, cmd: VerifyBackup, op: Envelope) -> Saga:
    backup = StoredBackup(host, cmd, op)

    def verified(results: Results) -> BackupVerified:
        drill = results.get("restore_drilled", DrillResult)
        return BackupVerified(
            kind=cmd.KIND,
            database_id=cmd.database_id,
            backup_id=cmd.backup_id,
            duration_ms=drill.duration_ms,
            tables=drill.tables,
        )

    return Saga([Step("restore_drilled", backup.drill, backup.undo_drill)], succeeded=verified)


def delete_backup(host: Host, cmd: DeleteBackup, op: Envelope) -> Saga:
    backup = BackupObject(host, cmd)
    return Saga(
        [Step("object_deleted", backup.delete_object)],
        succeeded=lambda _: BackupDeleted(
            kind=cmd.KIND, database_id=cmd.database_id, backup_id=cmd.backup_id, reason=cmd.reason
        ),
    )


def restore_point_in_time(host: Host, cmd: RestorePointInTime, op: Envelope) -> Saga:
    pitr, swap = PointInTime(host, cmd, op), Swap(host, cmd, op)
    return Saga(
        [*_recovered(pitr, swap), *_copied_out(pitr, swap), *_swapped_in(swap)],
        succeeded=lambda _: DatabaseRestored(
            kind=cmd.KIND, database_id=cmd.database_id, point_in_time=cmd.point_in_time
        ),
    )


def restore_point_in_time_to_new_database(host: Host, cmd: RestorePointInTimeToNewDatabase, op: Envelope) -> Saga:
    pitr, swap, db = PointInTime(host, cmd, op), Swap(host, cmd, op), NewTenantDatabase(host, cmd)
    return Saga(
        [
            *_recovered(pitr, swap),
            Step("role_created", db.create_role, db.drop_role),
            *_copied_out(pitr, swap),
            Step("database_created", swap.rename_into_place, db.drop_database),
            *_opened(db),
            Step("work_cleaned", swap.remove_work_dir),
        ],
        succeeded=lambda _: DatabaseRestored(
            kind=cmd.KIND, database_id=cmd.database_id, point_in_time=cmd.point_in_time
        ),
    )


# --- sequences several sagas share ---------------------------------------------------------


def _opened(db: NewTenantDatabase) -> list[Step]:
    """A new database made reachable: only its owner may connect, PgBouncer routes it, a real login works."""
    return [
        Step("public_revoked", db.revoke_public),
        Step("route_added", db.add_route, db.remove_route),
        Step("login_verified", db.verify_login),
    ]


def _swapped_in(swap: Swap) -> list[Step]:
    """The restored scratch database takes the live one's place; the original is kept until then."""
    return [
        Step("swapped_in", swap.swap_in, swap.swap_back),
        Step("original_dropped", swap.drop_kept),
        Step("work_cleaned", swap.remove_work_dir),
    ]


def _recovered(pitr: PointInTime, swap: Swap) -> list[Step]:
    """A temporary cluster recovered to the target time from a base backup and the archived WAL."""
    return [
        Step("wal_sealed", pitr.seal),
        Step("wal_checked", pitr.check_wal, swap.remove_work_dir),
        Step("point_in_time_recovered", pitr.recover, pitr.remove_cluster),
    ]


def _copied_out(pitr: PointInTime, swap: Swap) -> list[Step]:
    """The one database copied out of the temporary cluster, which is then removed."""
    return [
        Step("scratch_restored", pitr.extract, swap.drop_scratch),
        Step("temporary_cluster_removed", pitr.remove_cluster),
    ]


SagaFactory = Callable[[Host, Any, Envelope], Saga]
SAGAS: dict[type[DatabaseCommand], SagaFactory] = {
    CreateDatabase: create_database,
    DeleteDatabase: delete_database,
    ResetDatabase: reset_database,
    RotateCredentials: rotate_credentials,
    SuspendDatabase: suspend_database,
    ResumeDatabase: resume_database,
    BackupDatabase: back_up,
    RestoreBackup: restore_backup,
    RestoreBackupToNewDatabase: restore_backup_to_new_database,
    VerifyBackup: verify_backup,
    DeleteBackup: delete_backup,
    RestorePointInTime: restore_point_in_time,
    RestorePointInTimeToNewDatabase: restore_point_in_time_to_new_database,
}
"""Every command the agent runs as a saga (a cancel is not one: it stops another operation)."""
