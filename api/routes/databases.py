"""Databases: create, list, read, credentials, delete, reset, rotate credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentPrincipal, IdempotencyKey, Platform, PlatformDep, Principal
from api.errors import ApiError, not_found
from api.models import Accepted, Credentials, DatabaseCreate, DatabasePublic, DatabasesPublic
from api.mutations import mutate
from api.routes.operations import load_operation
from infra.metadata.tables import CREDENTIALS
from infra.secrets import new_password, scram_verifier, seal
from producers.commands import request_operation
from readmodel.tables import DATABASES, GONE, IN_FLIGHT, OPERATIONS, PROJECTS
from schemas.commands import CreateDatabase, DatabaseCommand, DeleteDatabase, ResetDatabase, RotateCredentials

router = APIRouter(prefix="/databases", tags=["databases"])


def to_public(platform: Platform, row: Row[Any]) -> DatabasePublic:
    return DatabasePublic(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        status=row.status,
        host=platform.settings.pgbouncer_public_host,
        port=platform.settings.pgbouncer_port,
        dbname=row.dbname,
        user=row.role,
        last_operation_id=row.last_operation_id,
        last_verified_backup_id=row.last_verified_backup_id,
        last_verified_restore_at=row.last_verified_restore_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def load_database(
    conn: AsyncConnection, database_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Row[Any]:
    query = sa.select(DATABASES).where(DATABASES.c.id == database_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None or not (principal.is_admin or row.project_id == principal.project_id):
        raise not_found("database")
    return row


async def reserve_name(platform: Platform, conn: AsyncConnection, project_id: uuid.UUID, name: str) -> str:
    """Lock the project, then check the quota and that ``name`` is free; returns the project's plan."""
    project = (
        await conn.execute(sa.select(PROJECTS.c.plan).where(PROJECTS.c.id == project_id).with_for_update())
    ).first()
    if project is None:
        raise not_found("project")
    live = sa.and_(DATABASES.c.project_id == project_id, DATABASES.c.status.not_in(GONE))
    count = (await conn.execute(sa.select(sa.func.count()).where(live))).scalar_one()
    if count >= platform.settings.databases_per_project:
        raise ApiError(
            409, "quota_exceeded", f"a project holds at most {platform.settings.databases_per_project} databases"
        )
    if (await conn.execute(sa.select(DATABASES.c.id).where(live, DATABASES.c.name == name))).first():
        raise ApiError(409, "name_taken", f"this project already has a database named {name!r}")
    return str(project.plan)


async def new_database(platform: Platform, conn: AsyncConnection, project_id: uuid.UUID, name: str) -> dict[str, Any]:
    """Reserve ``name`` and make the identity of a new database: ids, physical names, a password
    (stored encrypted; its verifier and the copy sealed for the host are returned)."""
    await reserve_name(platform, conn, project_id, name)
    database_id = uuid.uuid4()
    verifier, sealed = await store_password(platform, conn, database_id, 1)
    return {
        "database_id": database_id,
        "dbname": f"db_{database_id.hex}",
        "role": f"u_{database_id.hex}",
        "password_verifier": verifier,
        "sealed_password": sealed,
        "connection_limit": platform.settings.tenant_connection_limit,
    }


async def ensure_idle(conn: AsyncConnection, database_id: uuid.UUID) -> None:
    """409 while another operation on this database has not finished."""
    busy = sa.and_(OPERATIONS.c.database_id == database_id, OPERATIONS.c.status.in_(IN_FLIGHT))
    if (await conn.execute(sa.select(OPERATIONS.c.id).where(busy))).first():
        raise ApiError(409, "operation_in_progress", "another operation on this database has not finished yet")


async def store_password(
    platform: Platform, conn: AsyncConnection, database_id: uuid.UUID, version: int
) -> tuple[str, str]:
    """A fresh password: stored encrypted, returned as (SCRAM verifier, sealed for the host)."""
    password = new_password()
    await conn.execute(
        sa.insert(CREDENTIALS).values(
            database_id=database_id,
            version=version,
            created_at=datetime.now(UTC),
            password_encrypted=platform.box.encrypt(password, context=f"{database_id}:{version}"),
        )
    )
    sealed = seal(password, public_key_b64=platform.settings.host_public_key, context=str(database_id))
    return scram_verifier(password), sealed


async def accept_operation(
    platform: Platform,
    conn: AsyncConnection,
    principal: Principal,
    command: DatabaseCommand,
    *,
    name: str,
    project_id: uuid.UUID,
    credentials_version: int,
    host_id: str | None = None,
    backup_id: uuid.UUID | None = None,
    point_in_time: datetime | None = None,
) -> Accepted:
    """Queue ``command`` as a new operation; 202's body: the operation and the database it acts on."""
    operation_id = await request_operation(
        conn,
        platform.subjects,
        command=command,
        name=name,
        host_id=host_id or platform.settings.host_id,
        credentials_version=credentials_version,
        actor=principal.actor,
        project_id=project_id,
        backup_id=backup_id,
        point_in_time=point_in_time,
    )
    database = await load_database(conn, command.database_id, principal)
    return Accepted(
        operation=await load_operation(conn, operation_id, principal), database=to_public(platform, database)
    )


@router.post("", status_code=202, response_model=Accepted)
async def create_database(
    *, platform: PlatformDep, principal: CurrentPrincipal, body: DatabaseCreate, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Create a database; 202 with the operation that provisions it."""
    principal.check_project(body.project_id)

    async def change(conn: AsyncConnection) -> Accepted:
        command = CreateDatabase(**await new_database(platform, conn, body.project_id, body.name))
        return await accept_operation(
            platform, conn, principal, command, name=body.name, project_id=body.project_id, credentials_version=1
        )

    return await mutate(
        platform,
        principal,
        key=idempotency_key,
        method="POST",
        path="/databases",
        body=body.model_dump(mode="json"),
        status_code=202,
        change=change,
    )


@router.get("", response_model=DatabasesPublic)
async def read_databases(
    *, platform: PlatformDep, principal: CurrentPrincipal, project_id: uuid.UUID | None = None
) -> DatabasesPublic:
    """List a project's databases (deleted ones included, with their status)."""
    project_id = project_id or principal.project_id
    if project_id is None:
        raise ApiError(422, "invalid_request", "project_id is required with the admin token")
    principal.check_project(project_id)
    async with platform.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(DATABASES).where(DATABASES.c.project_id == project_id).order_by(DATABASES.c.created_at)
            )
        ).all()
    return DatabasesPublic(data=[to_public(platform, r) for r in rows], count=len(rows))


@router.get("/{database_id}", response_model=DatabasePublic)
async def read_database(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> DatabasePublic:
    """Status and PgBouncer address of one database."""
    async with platform.engine.connect() as conn:
        return to_public(platform, await load_database(conn, database_id, principal))


@router.get("/{database_id}/credentials", response_model=Credentials)
async def read_credentials(
    *, platform: PlatformDep, principal: CurrentPrincipal, database_id: uuid.UUID
) -> Credentials:
    """The connection URI with the current password (owner only)."""
    async with platform.engine.connect() as conn:
        db = await load_database(conn, database_id, principal)
        if db.status in GONE:
            raise not_found("database")
        encrypted = (
            await conn.execute(
                sa.select(CREDENTIALS.c.password_encrypted).where(
                    CREDENTIALS.c.database_id == database_id, CREDENTIALS.c.version == db.credentials_version
                )
            )
        ).scalar_one()
    password = platform.box.decrypt(encrypted, context=f"{database_id}:{db.credentials_version}")
    host, port = platform.settings.pgbouncer_public_host, platform.settings.pgbouncer_port
    return Credentials(
        uri=f"postgresql://{db.role}:{password}@{host}:{port}/{db.dbname}",
        host=host,
        port=port,
        dbname=db.dbname,
        user=db.role,
        password=password,
    )


async def _change_database(
    platform: Platform,
    principal: Principal,
    database_id: uuid.UUID,
    *,
    key: str | None,
    action: str,
    build: type[DeleteDatabase] | type[ResetDatabase] | type[RotateCredentials],
) -> JSONResponse:
    async def change(conn: AsyncConnection) -> Accepted:
        db = await load_database(conn, database_id, principal, for_update=True)
        if db.status in GONE:
            raise not_found("database")
        await ensure_idle(conn, database_id)
        version = db.credentials_version
        fields: dict[str, Any] = {"database_id": database_id, "dbname": db.dbname, "role": db.role}
        if build is RotateCredentials:
            latest = (
                await conn.execute(
                    sa.select(sa.func.max(CREDENTIALS.c.version)).where(CREDENTIALS.c.database_id == database_id)
                )
            ).scalar_one()
            version = latest + 1
            fields["password_verifier"], fields["sealed_password"] = await store_password(
                platform, conn, database_id, version
            )
            fields["credentials_version"] = version
        return await accept_operation(
            platform,
            conn,
            principal,
            build(**fields),
            name=db.name,
            project_id=db.project_id,
            credentials_version=version,
        )

    return await mutate(
        platform,
        principal,
        key=key,
        method="POST",
        path=f"/databases/{database_id}/{action}",
        body=None,
        status_code=202,
        change=change,
    )


@router.delete("/{database_id}", status_code=202, response_model=Accepted)
async def delete_database(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    database_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Delete a database and its role; 202 with the operation."""
    return await _change_database(
        platform, principal, database_id, key=idempotency_key, action="delete", build=DeleteDatabase
    )


@router.post("/{database_id}/reset", status_code=202, response_model=Accepted)
async def reset_database(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    database_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Drop all data; the name and credentials stay."""
    return await _change_database(
        platform, principal, database_id, key=idempotency_key, action="reset", build=ResetDatabase
    )


@router.post("/{database_id}/rotate-credentials", status_code=202, response_model=Accepted)
async def rotate_credentials(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    database_id: uuid.UUID,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """New password; the old one stops working once the operation succeeds."""
    return await _change_database(
        platform, principal, database_id, key=idempotency_key, action="rotate-credentials", build=RotateCredentials
    )
