"""Each projection function, applied directly to a migrated metadata database: what one event
does to the read model, and that applying it twice does nothing more."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.metadata.engine import make_engine
from readmodel.projection import PROJECTIONS, apply, apply_events
from readmodel.tables import (
    AUDIT,
    BACKUPS,
    BASE_BACKUPS,
    DATABASES,
    DRIFTS,
    EVENTS,
    HOST_STATES,
    OPERATIONS,
    POLICIES,
    PROJECTS,
    STEPS,
    WAL_SEGMENTS,
)
from schemas.commands import DriftKind, OperationKind
from schemas.envelope import Envelope, Payload
from schemas.events import (
    PLATFORM_PROJECT,
    ApiTokenCreated,
    ApiTokenRevoked,
    BackupCompleted,
    BackupDeleted,
    BackupDownloaded,
    BackupMissed,
    BackupPolicySet,
    BackupVerified,
    BaseBackupCompleted,
    BaseBackupDeleted,
    CancelRequested,
    CommandRejected,
    CredentialsRead,
    CredentialsRotated,
    DatabaseCreated,
    DatabaseDeleted,
    DatabaseReset,
    DatabaseRestored,
    DatabaseResumed,
    DatabaseSuspended,
    DriftDetected,
    DriftRepaired,
    DriftResolved,
    HostDatabase,
    HostStateReported,
    InvitationRevoked,
    MemberAdded,
    MemberInvited,
    MemberRemoved,
    MemberRoleChanged,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    OrganizationCreated,
    OrganizationPlanChanged,
    OrganizationResumed,
    OrganizationSuspended,
    ProjectCreated,
    ProjectDeleted,
    ProjectPlanChanged,
    RetryRequested,
    VerifierDrifted,
    WalSegmentArchived,
    WebhookEndpointDisabled,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def conn(metadata_dsn: str) -> AsyncIterator[AsyncConnection]:
    """A transaction that is rolled back after the test: every test starts from empty tables."""
    engine = make_engine(metadata_dsn, pool_size=1)
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        await transaction.rollback()
    await engine.dispose()


class Operation:
    """The events of one operation, numbered as the API and the agent number them."""

    def __init__(self, kind: OperationKind, *, database_id: uuid.UUID | None = None) -> None:
        self.kind = kind
        self.id = uuid.uuid4()
        self.project_id = uuid.uuid4()
        self.database_id = database_id or uuid.uuid4()
        self.sequence = 1

    def requested(self, **fields: Any) -> Envelope:
        event = OperationRequested(
            kind=self.kind,
            database_id=self.database_id,
            host_id="host-1",
            dbname=f"db_{self.database_id.hex}",
            role=f"u_{self.database_id.hex}",
            credentials_version=1,
            requested_at=T0,
            **{"name": "app", **fields},
        )
        return self._wrap(event, 0)

    def next(self, event_type: type[OperationEvent], **fields: Any) -> Envelope:
        self.sequence += 1
        return self._wrap(event_type(kind=self.kind, database_id=self.database_id, **fields), self.sequence)

    def _wrap(self, payload: Payload, sequence: int) -> Envelope:
        return Envelope.wrap(
            payload,
            correlation_id=self.id,
            sequence=sequence,
            actor="token:test",
            project_id=self.project_id,
            occurred_at=T0 + timedelta(seconds=sequence),
        )


def outside_operation(payload: Payload, project_id: uuid.UUID | None = None) -> Envelope:
    return Envelope.wrap(
        payload, correlation_id=uuid.uuid4(), sequence=0, actor="admin", project_id=project_id or uuid.uuid4()
    )


async def one(conn: AsyncConnection, table: sa.Table, *where: Any) -> Any:
    return (await conn.execute(sa.select(table).where(*where))).one()


async def audit(conn: AsyncConnection, project_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = await conn.execute(
        sa.select(AUDIT.c.action, AUDIT.c.outcome).where(AUDIT.c.project_id == project_id).order_by(AUDIT.c.occurred_at)
    )
    return [(r.action, r.outcome) for r in rows]


async def apply_all(conn: AsyncConnection, *events: Envelope) -> None:
    """The events in one batch, as the projector applies them (``apply`` is one event alone)."""
    await apply_events(conn, events)


def test_every_event_that_changes_the_read_model_has_a_test() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert {projection.__name__ for projection in PROJECTIONS.values()} <= tested


async def test_project_created(conn: AsyncConnection) -> None:
    event = outside_operation(ProjectCreated(name="acme", plan="pro"))
    await apply_all(conn, event, event)
    project = await one(conn, PROJECTS, PROJECTS.c.id == event.project_id)
    assert (project.name, project.plan, project.created_at) == ("acme", "pro", event.occurred_at)
    assert await audit(conn, event.project_id) == [("project.create", "succeeded")]


async def test_project_deleted(conn: AsyncConnection) -> None:
    created = outside_operation(ProjectCreated(name="acme", plan="free"))
    deleted = outside_operation(ProjectDeleted(name="acme"), created.project_id)
    await apply_all(conn, created, deleted, deleted)
    assert (await one(conn, PROJECTS, PROJECTS.c.id == created.project_id)).deleted_at == deleted.occurred_at
    assert await audit(conn, created.project_id) == [("project.create", "succeeded"), ("project.delete", "succeeded")]


async def test_api_token_revoked(conn: AsyncConnection) -> None:
    event = outside_operation(ApiTokenRevoked(token_id=uuid.uuid4(), name="ci"))
    await apply_all(conn, event, event)
    assert await audit(conn, event.project_id) == [("api_token.revoke", "succeeded")]


async def test_api_token_created(conn: AsyncConnection) -> None:
    event = outside_operation(ApiTokenCreated(token_id=uuid.uuid4(), name="ci"))
    await apply_all(conn, event, event)
    assert await audit(conn, event.project_id) == [("api_token.create", "succeeded")]


async def test_backup_policy_set(conn: AsyncConnection) -> None:
    database_id, project_id = uuid.uuid4(), uuid.uuid4()
    first = outside_operation(BackupPolicySet(database_id=database_id, schedule="daily", retain_days=7, keep_last=7))
    second = outside_operation(
        BackupPolicySet(database_id=database_id, schedule=None, retain_days=3, keep_last=1), project_id
    )
    await apply_all(conn, first, second)
    policy = await one(conn, POLICIES, POLICIES.c.database_id == database_id)
    assert (policy.schedule, policy.retain_days, policy.keep_last) == (None, 3, 1)
    assert await audit(conn, project_id) == [("backup.policy_set", "succeeded")]


async def test_cancel_requested(conn: AsyncConnection) -> None:
    event = outside_operation(CancelRequested(database_id=uuid.uuid4(), operation_id=uuid.uuid4()))
    await apply(conn, event)
    assert await audit(conn, event.project_id) == [("operation.cancel", "requested")]


async def test_credentials_read(conn: AsyncConnection) -> None:
    event = outside_operation(CredentialsRead(database_id=uuid.uuid4(), credentials_version=2))
    await apply_all(conn, event, event)
    assert await audit(conn, event.project_id) == [("database.credentials_read", "succeeded")]


async def test_backup_downloaded(conn: AsyncConnection) -> None:
    event = outside_operation(BackupDownloaded(database_id=uuid.uuid4(), backup_id=uuid.uuid4()))
    await apply(conn, event)
    assert await audit(conn, event.project_id) == [("backup.download", "succeeded")]


async def test_backup_missed(conn: AsyncConnection) -> None:
    event = outside_operation(BackupMissed(database_id=uuid.uuid4(), slot=T0, reason="no backup was taken"))
    await apply(conn, event)
    assert await audit(conn, event.project_id) == [("backup.missed", "missed")]


async def test_command_rejected(conn: AsyncConnection) -> None:
    rejected = CommandRejected(host_id="h1", subject="ns.cmd.h1.database.delete", stream_sequence=7, reason="unsigned")
    event = outside_operation(rejected, PLATFORM_PROJECT)
    await apply_all(conn, event, event)
    assert await audit(conn, PLATFORM_PROJECT) == [("command.rejected", "rejected")]


async def test_verifier_drifted(conn: AsyncConnection) -> None:
    drifted = VerifierDrifted(host_id="h1", database_id=uuid.uuid4(), dbname="db_x")
    event = outside_operation(drifted, PLATFORM_PROJECT)
    await apply_all(conn, event, event)
    assert ("database.verifier_drift", "detected") in await audit(conn, PLATFORM_PROJECT)


async def test_project_plan_changed(conn: AsyncConnection) -> None:
    created = outside_operation(ProjectCreated(name="acme", plan="free"))
    upgraded = Envelope.wrap(
        ProjectPlanChanged(plan="pro", previous="free"),
        correlation_id=uuid.uuid4(),
        sequence=0,
        actor="admin",
        project_id=created.project_id,
    )
    await apply_all(conn, created, upgraded, upgraded)
    project = await one(conn, PROJECTS, PROJECTS.c.id == created.project_id)
    assert project.plan == "pro"
    assert await audit(conn, created.project_id) == [
        ("project.create", "succeeded"),
        ("project.plan_change", "succeeded"),
    ]


async def audited_once(conn: AsyncConnection, payload: Payload, action: str) -> None:
    """An organization's event is filed under it (its id where a project's would be), once."""
    event = outside_operation(payload)
    await apply_all(conn, event, event)
    assert await audit(conn, event.project_id) == [(action, "succeeded")]


async def test_organization_created(conn: AsyncConnection) -> None:
    await audited_once(conn, OrganizationCreated(name="acme", owner=uuid.uuid4()), "organization.create")


async def test_organization_plan_changed(conn: AsyncConnection) -> None:
    await audited_once(conn, OrganizationPlanChanged(plan="pro", previous="free"), "organization.plan_change")


async def test_organization_suspended(conn: AsyncConnection) -> None:
    await audited_once(conn, OrganizationSuspended(reason="payment overdue"), "organization.suspend")


async def test_organization_resumed(conn: AsyncConnection) -> None:
    await audited_once(conn, OrganizationResumed(), "organization.resume")


async def test_member_invited(conn: AsyncConnection) -> None:
    await audited_once(
        conn, MemberInvited(invitation_id=uuid.uuid4(), email="bob@example.com", role="viewer"), "member.invite"
    )


async def test_invitation_revoked(conn: AsyncConnection) -> None:
    await audited_once(
        conn, InvitationRevoked(invitation_id=uuid.uuid4(), email="bob@example.com"), "member.invitation_revoke"
    )


async def test_member_added(conn: AsyncConnection) -> None:
    await audited_once(conn, MemberAdded(user_id=uuid.uuid4(), role="viewer"), "member.add")


async def test_member_role_changed(conn: AsyncConnection) -> None:
    await audited_once(
        conn, MemberRoleChanged(user_id=uuid.uuid4(), role="admin", previous="viewer"), "member.role_change"
    )


async def test_member_removed(conn: AsyncConnection) -> None:
    await audited_once(conn, MemberRemoved(user_id=uuid.uuid4(), role="admin"), "member.remove")


async def test_database_suspended(conn: AsyncConnection) -> None:
    suspend = Operation(OperationKind.SUSPEND)
    create = Operation(OperationKind.CREATE, database_id=suspend.database_id)
    await apply_all(conn, create.requested(), create.next(DatabaseCreated), suspend.requested())
    assert (await one(conn, DATABASES, DATABASES.c.id == suspend.database_id)).status == "suspending"
    await apply(conn, suspend.next(DatabaseSuspended))
    assert (await one(conn, DATABASES, DATABASES.c.id == suspend.database_id)).status == "suspended"


async def test_database_resumed(conn: AsyncConnection) -> None:
    resume = Operation(OperationKind.RESUME)
    create = Operation(OperationKind.CREATE, database_id=resume.database_id)
    suspend = Operation(OperationKind.SUSPEND, database_id=resume.database_id)
    await apply_all(conn, create.requested(), create.next(DatabaseCreated), suspend.requested())
    await apply_all(conn, suspend.next(DatabaseSuspended), resume.requested(), resume.next(DatabaseResumed))
    assert (await one(conn, DATABASES, DATABASES.c.id == resume.database_id)).status == "available"
    again = Operation(OperationKind.SUSPEND, database_id=resume.database_id)
    failed = Operation(OperationKind.RESUME, database_id=resume.database_id)
    await apply_all(conn, again.requested(), again.next(DatabaseSuspended), failed.requested())
    await apply(conn, failed.next(OperationCompensated, reason="host down", failed_step="logins_allowed"))
    assert (await one(conn, DATABASES, DATABASES.c.id == resume.database_id)).status == "suspended"  # still


async def test_retry_requested(conn: AsyncConnection) -> None:
    event = outside_operation(RetryRequested(database_id=uuid.uuid4(), operation_id=uuid.uuid4()))
    await apply_all(conn, event, event)
    assert await audit(conn, event.project_id) == [("operation.retry", "requested")]


def host_state(reported_at: datetime, dbnames: list[str]) -> Envelope:
    state = HostStateReported(
        host_id="h1",
        report_id=uuid.uuid4(),
        reported_at=reported_at,
        wal_lsn="0/1000000",
        databases=[HostDatabase(dbname=name, owner="u_x", size_bytes=8000) for name in dbnames],
        roles=["u_x"],
        routes=dbnames,
        verifier_mismatch=[],
    )
    return outside_operation(state, PLATFORM_PROJECT)


async def test_host_state_reported(conn: AsyncConnection) -> None:
    """The latest report per host is kept, whatever order they come in."""
    now = datetime.now(UTC)
    first, then = host_state(now, ["db_a"]), host_state(now + timedelta(seconds=60), ["db_a", "db_b"])
    await apply_all(conn, first, then, first)
    state = await one(conn, HOST_STATES, HOST_STATES.c.host_id == "h1")
    assert state.routes == ["db_a", "db_b"] and state.databases[1] == {
        "dbname": "db_b",
        "owner": "u_x",
        "size_bytes": 8000,
    }


def drift(payload: Payload, project_id: uuid.UUID) -> Envelope:
    return outside_operation(payload, project_id)


async def test_drift_detected(conn: AsyncConnection) -> None:
    project, database_id = uuid.uuid4(), uuid.uuid4()
    found = dict(host_id="h1", kind=DriftKind.VERIFIER_CHANGED, object="u_x", database_id=database_id)
    detected = drift(DriftDetected(**found, repair=True, report_id=uuid.uuid4()), project)
    await apply_all(conn, detected, detected)
    row = await one(conn, DRIFTS, DRIFTS.c.object == "u_x")
    assert (row.status, row.project_id, row.database_id, row.repair) == ("open", project, database_id, True)
    assert await audit(conn, project) == [("host.drift", "detected")]


async def test_drift_repaired(conn: AsyncConnection) -> None:
    project, database_id = uuid.uuid4(), uuid.uuid4()
    found = dict(host_id="h1", kind=DriftKind.ROLE_MISSING, object="u_y", database_id=database_id)
    detected = drift(DriftDetected(**found, repair=True, report_id=uuid.uuid4()), project)
    repaired = drift(DriftRepaired(**found), project)
    again = drift(DriftDetected(**found, repair=True, report_id=uuid.uuid4()), project)
    await apply_all(conn, detected, repaired)
    row = await one(conn, DRIFTS, DRIFTS.c.object == "u_y")
    assert row.status == "repaired" and row.repaired_at is not None
    await apply_all(conn, again)  # it came back: open again
    row = await one(conn, DRIFTS, DRIFTS.c.object == "u_y")
    assert row.status == "open" and row.repaired_at is None
    assert await audit(conn, project) == [
        ("host.drift", "detected"),
        ("host.drift", "repaired"),
        ("host.drift", "detected"),
    ]


async def test_drift_resolved(conn: AsyncConnection) -> None:
    found = dict(host_id="h1", kind=DriftKind.DATABASE_ORPHANED, object="db_orphan")
    detected = drift(DriftDetected(**found, repair=False, report_id=uuid.uuid4()), PLATFORM_PROJECT)
    resolved = drift(DriftResolved(**found), PLATFORM_PROJECT)
    await apply_all(conn, detected, resolved, resolved)
    row = await one(conn, DRIFTS, DRIFTS.c.object == "db_orphan")
    assert row.status == "resolved" and row.database_id is None and row.resolved_at is not None
    assert [a for a in await audit(conn, PLATFORM_PROJECT) if a[0] == "host.drift"][-2:] == [
        ("host.drift", "detected"),
        ("host.drift", "resolved"),
    ]


async def test_webhook_endpoint_disabled(conn: AsyncConnection) -> None:
    """Published once even when the same event comes again in a later batch."""
    endpoint_id = uuid.uuid4()
    event = outside_operation(WebhookEndpointDisabled(endpoint_id=endpoint_id, reason="the endpoint answered 410 Gone"))
    await apply_all(conn, event, event)
    await apply_all(conn, event)
    assert await audit(conn, event.project_id) == [("webhook.disable", "disabled")]
    assert await published(conn, event.project_id) == [(1, "webhook.endpoint_disabled", f"webhooks/{endpoint_id}")]


async def test_wal_segment_archived(conn: AsyncConnection) -> None:
    segment = "000000010000000000000003"
    for size in (100, 200):  # archived again after a crash: the newer record wins
        archived = WalSegmentArchived(host_id="h1", segment=segment, size_bytes=size, archived_at=T0)
        await apply(conn, outside_operation(archived))
    row = await one(conn, WAL_SEGMENTS, WAL_SEGMENTS.c.segment == segment)
    assert (row.host_id, row.size_bytes) == ("h1", 200)


async def test_base_backup_completed(conn: AsyncConnection) -> None:
    base_id = uuid.uuid4()
    completed = BaseBackupCompleted(
        host_id="h1",
        base_backup_id=base_id,
        start_segment="000000010000000000000002",
        stop_segment="000000010000000000000003",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=5),
        size_bytes=1000,
    )
    await apply_all(conn, outside_operation(completed), outside_operation(completed))
    row = await one(conn, BASE_BACKUPS, BASE_BACKUPS.c.id == base_id)
    assert (row.start_segment, row.deleted) == ("000000010000000000000002", False)


async def test_base_backup_deleted(conn: AsyncConnection) -> None:
    base_id = uuid.uuid4()
    completed = BaseBackupCompleted(
        host_id="h2",
        base_backup_id=base_id,
        start_segment="000000010000000000000001",
        stop_segment="000000010000000000000001",
        started_at=T0,
        finished_at=T0,
        size_bytes=1,
    )
    await apply(conn, outside_operation(completed))
    for n in (1, 2, 3):
        segment = WalSegmentArchived(host_id="h2", segment=f"00000001000000000000000{n}", size_bytes=1, archived_at=T0)
        await apply(conn, outside_operation(segment))
    deleted = BaseBackupDeleted(host_id="h2", base_backup_id=base_id, wal_kept_from="000000010000000000000003")
    await apply(conn, outside_operation(deleted))
    assert (await one(conn, BASE_BACKUPS, BASE_BACKUPS.c.id == base_id)).deleted
    kept = await conn.execute(sa.select(WAL_SEGMENTS.c.segment).where(WAL_SEGMENTS.c.host_id == "h2"))
    assert [r.segment for r in kept] == ["000000010000000000000003"]


async def test_operation_requested(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    await apply_all(conn, create.requested(), create.requested())  # the API's and the projector's copy
    operation = await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)
    assert (operation.status, operation.kind, operation.last_sequence) == ("accepted", "create", 0)
    database = await one(conn, DATABASES, DATABASES.c.id == create.database_id)
    assert (database.status, database.name, database.credentials_version) == ("creating", "app", 1)
    assert await audit(conn, create.project_id) == [("database.create", "requested")]

    reset = Operation(OperationKind.RESET, database_id=create.database_id)
    await apply(conn, reset.requested())
    assert (await one(conn, DATABASES, DATABASES.c.id == create.database_id)).status == "resetting"


async def test_operation_requested_for_a_backup_records_the_object(conn: AsyncConnection) -> None:
    backup = Operation(OperationKind.BACKUP)
    backup_id = uuid.uuid4()
    await apply(conn, backup.requested(backup_id=backup_id, trigger="schedule", object_key="backups/x/y/z.enc"))
    row = await one(conn, BACKUPS, BACKUPS.c.id == backup_id)
    assert (row.status, row.trigger, row.object_key) == ("pending", "schedule", "backups/x/y/z.enc")

    first_release = Operation(OperationKind.BACKUP)
    old_id = uuid.uuid4()
    await apply(conn, first_release.requested(backup_id=old_id))  # recorded before events carried the key
    expected = f"backups/{first_release.project_id}/{first_release.database_id}/{old_id}.pgdump.enc"
    assert (await one(conn, BACKUPS, BACKUPS.c.id == old_id)).object_key == expected

    deletion = Operation(OperationKind.DELETE_BACKUP, database_id=backup.database_id)
    await apply(conn, deletion.requested(backup_id=backup_id))
    assert (await one(conn, BACKUPS, BACKUPS.c.id == backup_id)).status == "deleting"


async def test_operation_started(conn: AsyncConnection) -> None:
    backup = Operation(OperationKind.BACKUP)
    backup_id = uuid.uuid4()
    await apply_all(conn, backup.requested(backup_id=backup_id, object_key="k"), backup.next(OperationStarted))
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == backup.id)).status == "running"
    assert (await one(conn, BACKUPS, BACKUPS.c.id == backup_id)).status == "running"


async def test_step_completed(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    step = create.next(OperationStepCompleted, step="role_created")
    await apply_all(conn, create.requested(), step, step)
    row = await one(conn, STEPS, STEPS.c.operation_id == create.id)
    assert (row.name, row.status, row.position) == ("role_created", "completed", step.sequence)
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)).last_sequence == step.sequence


async def test_step_failed(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    failed = create.next(OperationStepFailed, step="login_verified", reason="refused", detail="port 6432: reset")
    await apply_all(conn, create.requested(), failed)
    row = await one(conn, STEPS, STEPS.c.operation_id == create.id)
    assert (row.status, row.detail) == ("failed", "refused")  # what tenants read
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)).error_detail == "port 6432: reset"


async def test_step_compensated(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    await apply_all(
        conn,
        create.requested(),
        create.next(OperationStepCompleted, step="role_created"),
        create.next(OperationStepCompensated, step="role_created"),
    )
    assert (await one(conn, STEPS, STEPS.c.operation_id == create.id)).status == "compensated"


async def test_an_event_older_than_the_operation_changes_nothing(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    completed = create.next(OperationStepCompleted, step="role_created")
    created = create.next(DatabaseCreated)
    await apply_all(conn, create.requested(), completed, created, completed)
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)).last_sequence == created.sequence


async def test_operation_failed(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    failed = create.next(OperationFailed, reason="dead-lettered", dead_lettered=True)
    await apply_all(conn, create.requested(), failed, failed)
    operation = await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)
    assert (operation.status, operation.error) == ("failed", "dead-lettered")
    assert (await one(conn, DATABASES, DATABASES.c.id == create.database_id)).status == "failed"
    assert await audit(conn, create.project_id) == [("database.create", "requested"), ("database.create", "failed")]

    backup, backup_id = Operation(OperationKind.BACKUP), uuid.uuid4()
    await apply_all(
        conn, backup.requested(backup_id=backup_id, object_key="k"), backup.next(OperationFailed, reason="no")
    )
    row = await one(conn, BACKUPS, BACKUPS.c.id == backup_id)
    assert (row.status, row.error) == ("failed", "no")


async def test_operation_compensated(conn: AsyncConnection) -> None:
    reset = Operation(OperationKind.RESET)
    create = Operation(OperationKind.CREATE, database_id=reset.database_id)
    await apply_all(conn, create.requested(), create.next(DatabaseCreated), reset.requested())
    await apply(conn, reset.next(OperationCompensated, reason="cancelled", failed_step="database_dropped"))
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == reset.id)).status == "compensated"
    assert (await one(conn, DATABASES, DATABASES.c.id == reset.database_id)).status == "available"

    backup, backup_id = Operation(OperationKind.BACKUP), uuid.uuid4()
    deletion = Operation(OperationKind.DELETE_BACKUP, database_id=backup.database_id)
    await apply_all(
        conn, backup.requested(backup_id=backup_id, object_key="k"), deletion.requested(backup_id=backup_id)
    )
    await apply(conn, deletion.next(OperationCompensated, reason="store down", failed_step="object_deleted"))
    assert (await one(conn, BACKUPS, BACKUPS.c.id == backup_id)).status == "completed"


async def test_database_created(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    created = create.next(DatabaseCreated)
    await apply_all(conn, create.requested(), created, created)
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == create.id)).status == "succeeded"
    database = await one(conn, DATABASES, DATABASES.c.id == create.database_id)
    assert (database.status, database.updated_at) == ("available", created.occurred_at)
    assert await audit(conn, create.project_id) == [("database.create", "requested"), ("database.create", "succeeded")]


async def test_database_deleted(conn: AsyncConnection) -> None:
    create = Operation(OperationKind.CREATE)
    delete = Operation(OperationKind.DELETE, database_id=create.database_id)
    ended = T0 + timedelta(minutes=5)
    await apply_all(conn, create.requested(), create.next(DatabaseCreated), delete.requested())
    await apply(conn, delete.next(DatabaseDeleted, writes_ended_at=ended))
    database = await one(conn, DATABASES, DATABASES.c.id == create.database_id)
    assert (database.status, database.deleted_at) == ("deleted", ended)


async def test_database_reset(conn: AsyncConnection) -> None:
    reset = Operation(OperationKind.RESET)
    create = Operation(OperationKind.CREATE, database_id=reset.database_id)
    await apply_all(
        conn, create.requested(), create.next(DatabaseCreated), reset.requested(), reset.next(DatabaseReset)
    )
    assert (await one(conn, DATABASES, DATABASES.c.id == reset.database_id)).last_operation_id == reset.id


async def test_database_restored(conn: AsyncConnection) -> None:
    restore = Operation(OperationKind.PITR_RESTORE_NEW_DATABASE)
    await apply_all(conn, restore.requested(point_in_time=T0), restore.next(DatabaseRestored, point_in_time=T0))
    assert (await one(conn, DATABASES, DATABASES.c.id == restore.database_id)).status == "available"
    assert (await one(conn, OPERATIONS, OPERATIONS.c.id == restore.id)).point_in_time == T0


async def test_credentials_rotated(conn: AsyncConnection) -> None:
    rotate = Operation(OperationKind.ROTATE_CREDENTIALS)
    create = Operation(OperationKind.CREATE, database_id=rotate.database_id)
    await apply_all(conn, create.requested(), create.next(DatabaseCreated), rotate.requested())
    assert (await one(conn, DATABASES, DATABASES.c.id == rotate.database_id)).status == "rotating"
    await apply(conn, rotate.next(CredentialsRotated, credentials_version=2))
    database = await one(conn, DATABASES, DATABASES.c.id == rotate.database_id)
    assert (database.status, database.credentials_version) == ("available", 2)


async def test_backup_completed(conn: AsyncConnection) -> None:
    backup, backup_id = Operation(OperationKind.BACKUP), uuid.uuid4()
    completed = backup.next(
        BackupCompleted,
        backup_id=backup_id,
        object_key="backups/k",
        size_bytes=10,
        dump_bytes=8,
        sha256="a" * 64,
        key_id="k1",
        duration_ms=5,
    )
    await apply_all(conn, backup.requested(backup_id=backup_id, object_key="backups/k"), completed)
    row = await one(conn, BACKUPS, BACKUPS.c.id == backup_id)
    assert (row.status, row.size_bytes, row.sha256, row.completed_at) == (
        "completed",
        10,
        "a" * 64,
        completed.occurred_at,
    )


async def test_backup_verified(conn: AsyncConnection) -> None:
    backup, backup_id = Operation(OperationKind.BACKUP), uuid.uuid4()
    create = Operation(OperationKind.CREATE, database_id=backup.database_id)
    drill = Operation(OperationKind.VERIFY_BACKUP, database_id=backup.database_id)
    verified = drill.next(BackupVerified, backup_id=backup_id, duration_ms=30, tables=2)
    await apply_all(conn, create.requested(), backup.requested(backup_id=backup_id, object_key="k"), drill.requested())
    await apply(conn, verified)
    row = await one(conn, BACKUPS, BACKUPS.c.id == backup_id)
    assert (row.last_verified_at, row.verified_tables) == (verified.occurred_at, 2)
    database = await one(conn, DATABASES, DATABASES.c.id == backup.database_id)
    assert (database.last_verified_backup_id, database.status) == (backup_id, "creating")  # a drill changes no status


async def test_backup_deleted(conn: AsyncConnection) -> None:
    backup, backup_id = Operation(OperationKind.BACKUP), uuid.uuid4()
    deletion = Operation(OperationKind.DELETE_BACKUP, database_id=backup.database_id)
    await apply_all(
        conn, backup.requested(backup_id=backup_id, object_key="k"), deletion.requested(backup_id=backup_id)
    )
    await apply(conn, deletion.next(BackupDeleted, backup_id=backup_id, reason="retention"))
    assert (await one(conn, BACKUPS, BACKUPS.c.id == backup_id)).status == "deleted"


async def published(conn: AsyncConnection, project_id: uuid.UUID) -> list[tuple[int, str, str]]:
    rows = await conn.execute(
        sa.select(EVENTS.c.sequence, EVENTS.c.type, EVENTS.c.subject)
        .where(EVENTS.c.project_id == project_id)
        .order_by(EVENTS.c.sequence)
    )
    return [(r.sequence, r.type, r.subject) for r in rows]


async def test_public_events_are_numbered_per_project_once_each(conn: AsyncConnection) -> None:
    """What subscribers see of a database's life: one public event per outcome, numbered 1, 2, ...
    in the order they happened, a duplicate or re-emitted event adding nothing."""
    create = Operation(OperationKind.CREATE)
    project, db = create.project_id, create.database_id

    def on_db(kind: OperationKind) -> Operation:
        operation = Operation(kind, database_id=db)
        operation.project_id = project
        return operation

    rotate, backup, drill, fails = (
        on_db(k)
        for k in (
            OperationKind.ROTATE_CREDENTIALS,
            OperationKind.BACKUP,
            OperationKind.VERIFY_BACKUP,
            OperationKind.BACKUP,
        )
    )
    backup_id, failing_backup_id = uuid.uuid4(), uuid.uuid4()
    created, rotated = create.next(DatabaseCreated), rotate.next(CredentialsRotated, credentials_version=2)
    completed = backup.next(
        BackupCompleted,
        backup_id=backup_id,
        object_key="k",
        size_bytes=10,
        dump_bytes=8,
        sha256="a" * 64,
        key_id="k1",
        duration_ms=5,
    )
    await apply_all(conn, create.requested(), created, created, rotate.requested(), rotated)
    await apply_all(conn, rotated, backup.requested(backup_id=backup_id, object_key="k"), completed, completed)
    await apply_all(
        conn,
        drill.requested(),
        drill.next(BackupVerified, backup_id=backup_id, duration_ms=3, tables=1),
        fails.requested(backup_id=failing_backup_id, object_key="k2"),
        fails.next(OperationFailed, reason="the store refused the upload"),
    )
    reset, restore, delete = (on_db(k) for k in (OperationKind.RESET, OperationKind.RESTORE, OperationKind.DELETE))
    await apply_all(conn, reset.requested(), reset.next(OperationCompensated, reason="cancelled", failed_step="x"))
    await apply_all(conn, restore.requested(backup_id=backup_id), restore.next(DatabaseRestored, backup_id=backup_id))
    await apply_all(conn, delete.requested(), delete.next(DatabaseDeleted))
    assert await published(conn, project) == [
        (1, "database.created", f"databases/{db}"),
        (2, "database.credentials_rotated", f"databases/{db}"),
        (3, "backup.completed", f"backups/{backup_id}"),
        (4, "backup.verified", f"backups/{backup_id}"),
        (5, "operation.failed", f"operations/{fails.id}"),
        (6, "backup.failed", f"backups/{failing_backup_id}"),
        (7, "operation.compensated", f"operations/{reset.id}"),
        (8, "database.restored", f"databases/{db}"),
        (9, "database.deleted", f"databases/{db}"),
    ]
    rows = (await conn.execute(sa.select(EVENTS).where(EVENTS.c.project_id == project))).all()
    assert rows[0].data == {"project_id": str(project), "database_id": str(db), "operation_id": str(create.id)}
    assert len({row.id for row in rows}) == 9

    other = Operation(OperationKind.CREATE)
    await apply_all(conn, other.requested(), other.next(DatabaseCreated))
    assert await published(conn, other.project_id) == [(1, "database.created", f"databases/{other.database_id}")]
