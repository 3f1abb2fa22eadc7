"""How each event changes the read model. Pure function of the event: no clock, no randomness,
so the live tables and a replay of the stream into an empty schema come out identical.

Operation rows only move forward: an event applies only when its sequence is above the
operation's ``last_sequence``, which makes a duplicate (or a re-emitted) event a no-op.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.metadata.models import (
    AUDIT,
    DATABASES,
    OPERATIONS,
    PROJECTS,
    STEPS,
    DatabaseStatus,
    OperationStatus,
)
from schemas.commands import OperationKind
from schemas.envelope import Envelope
from schemas.events import (
    SUCCEEDED,
    ApiTokenCreated,
    CredentialsRotated,
    OperationCompensated,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    OperationStepCompensated,
    OperationStepCompleted,
    OperationStepFailed,
    ProjectCreated,
)

BUSY = {
    OperationKind.CREATE: DatabaseStatus.CREATING,
    OperationKind.DELETE: DatabaseStatus.DELETING,
    OperationKind.RESET: DatabaseStatus.RESETTING,
    OperationKind.ROTATE_CREDENTIALS: DatabaseStatus.ROTATING,
}
AFTER_SUCCESS = {
    kind: DatabaseStatus.DELETED if kind is OperationKind.DELETE else DatabaseStatus.AVAILABLE for kind in OperationKind
}
SUCCESS_TYPES = {event.TYPE for event in SUCCEEDED.values()}


async def apply(conn: AsyncConnection, env: Envelope) -> None:
    event = env.payload()
    match event:
        case ProjectCreated():
            await conn.execute(
                insert(PROJECTS)
                .values(id=env.project_id, name=event.name, plan=event.plan, created_at=env.occurred_at)
                .on_conflict_do_nothing()
            )
            await _audit(conn, env, "project.create", "project", env.project_id, "succeeded", {"name": event.name})
        case ApiTokenCreated():
            await _audit(conn, env, "api_token.create", "api_token", event.token_id, "succeeded", {"name": event.name})
        case OperationRequested():
            await _requested(conn, env, event)
        case OperationEvent():
            if await _advance(conn, env, event):
                await _audit_outcome(conn, env, event)


async def _requested(conn: AsyncConnection, env: Envelope, event: OperationRequested) -> None:
    created = await conn.execute(
        insert(OPERATIONS)
        .values(
            id=env.correlation_id,
            project_id=env.project_id,
            database_id=event.database_id,
            kind=event.kind.value,
            status=OperationStatus.ACCEPTED.value,
            actor=env.actor,
            last_sequence=env.sequence,
            created_at=env.occurred_at,
            updated_at=env.occurred_at,
        )
        .on_conflict_do_nothing()
    )
    if not created.rowcount:
        return
    if event.kind is OperationKind.CREATE:
        await conn.execute(
            insert(DATABASES).values(
                id=event.database_id,
                project_id=env.project_id,
                name=event.name,
                host_id=event.host_id,
                dbname=event.dbname,
                role=event.role,
                status=BUSY[event.kind].value,
                credentials_version=event.credentials_version,
                last_operation_id=env.correlation_id,
                created_at=env.occurred_at,
                updated_at=env.occurred_at,
            )
        )
    else:
        await _set_database(conn, env, event, status=BUSY[event.kind])
    await _audit(
        conn, env, f"database.{event.kind.value}", "database", event.database_id, "requested", {"name": event.name}
    )


async def _advance(conn: AsyncConnection, env: Envelope, event: OperationEvent) -> bool:
    """Move the operation forward; ``False`` for an event already applied."""
    values: dict[str, Any] = {"last_sequence": env.sequence, "updated_at": env.occurred_at}
    match event:
        case OperationStarted():
            values["status"] = OperationStatus.RUNNING.value
        case OperationStepCompleted() | OperationStepCompensated() | OperationStepFailed():
            pass
        case OperationFailed() | OperationCompensated():
            failed = isinstance(event, OperationFailed)
            values["status"] = (OperationStatus.FAILED if failed else OperationStatus.COMPENSATED).value
            values["error"] = event.reason
        case _ if env.type in SUCCESS_TYPES:
            values["status"] = OperationStatus.SUCCEEDED.value
    moved = await conn.execute(
        sa.update(OPERATIONS)
        .where(OPERATIONS.c.id == env.correlation_id, OPERATIONS.c.last_sequence < env.sequence)
        .values(**values)
    )
    if not moved.rowcount:
        return False
    match event:
        case OperationStepCompleted():
            await _step(conn, env, event.step, "completed", None)
        case OperationStepFailed():
            await _step(conn, env, event.step, "failed", event.reason)
        case OperationStepCompensated():
            await _step(conn, env, event.step, "compensated", None)
        case OperationFailed() | OperationCompensated():
            after = DatabaseStatus.FAILED if event.kind is OperationKind.CREATE else DatabaseStatus.AVAILABLE
            await _set_database(conn, env, event, status=after)
        case CredentialsRotated():
            await _set_database(
                conn, env, event, status=AFTER_SUCCESS[event.kind], credentials_version=event.credentials_version
            )
        case _ if env.type in SUCCESS_TYPES:
            await _set_database(conn, env, event, status=AFTER_SUCCESS[event.kind])
    return True


async def _step(conn: AsyncConnection, env: Envelope, name: str, status: str, detail: str | None) -> None:
    values = {"status": status, "detail": detail, "updated_at": env.occurred_at}
    await conn.execute(
        insert(STEPS)
        .values(operation_id=env.correlation_id, name=name, position=env.sequence, **values)
        .on_conflict_do_update(index_elements=[STEPS.c.operation_id, STEPS.c.name], set_=values)
    )


async def _set_database(
    conn: AsyncConnection, env: Envelope, event: OperationEvent, *, status: DatabaseStatus, **values: Any
) -> None:
    await conn.execute(
        sa.update(DATABASES)
        .where(DATABASES.c.id == event.database_id)
        .values(status=status.value, last_operation_id=env.correlation_id, updated_at=env.occurred_at, **values)
    )


async def _audit_outcome(conn: AsyncConnection, env: Envelope, event: OperationEvent) -> None:
    if isinstance(event, OperationFailed | OperationCompensated):
        outcome = "failed" if isinstance(event, OperationFailed) else "compensated"
        detail = {"reason": event.reason}
    elif env.type in SUCCESS_TYPES:
        outcome, detail = "succeeded", {}
    else:
        return
    await _audit(conn, env, f"database.{event.kind.value}", "database", event.database_id, outcome, detail)


async def _audit(
    conn: AsyncConnection,
    env: Envelope,
    action: str,
    resource_type: str,
    resource_id: Any,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    operation_id = env.correlation_id if env.sequence or env.type == OperationRequested.TYPE else None
    await conn.execute(
        insert(AUDIT)
        .values(
            id=env.id,
            project_id=env.project_id,
            occurred_at=env.occurred_at,
            actor=env.actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            operation_id=operation_id,
            outcome=outcome,
            detail=detail,
        )
        .on_conflict_do_nothing()
    )
