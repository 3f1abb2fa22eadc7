"""Databases: create one, change it (delete, reset, rotate its credentials), read its credentials,
and the identity every new database gets (ids, physical names, a password)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import Accepted, Credentials, DatabasesPublic, DeleteAccepted
from api.platform import Platform
from api.principal import Principal
from api.usecases.loading import database_public, load_live_database
from api.usecases.operations import accept_operation, ensure_idle
from infra.metadata.tables import CREDENTIALS, ORGANIZATIONS
from infra.plans import entitlements
from infra.secrets import new_password, scram_verifier, seal
from producers.commands import project_event
from readmodel.tables import DATABASES, GONE, PROJECTS, DatabaseStatus, project_plan
from schemas.commands import CreateDatabase, DeleteDatabase, ResetDatabase, RotateCredentials
from schemas.events import CredentialsRead


@dataclass(frozen=True, kw_only=True)
class NewIdentity:
    """What makes a new database: ids, opaque physical names, and its password (stored encrypted;
    only its SCRAM verifier and a copy sealed to the host travel)."""

    database_id: uuid.UUID
    dbname: str
    role: str
    password_verifier: str
    sealed_password: str
    connection_limit: int

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


SUSPENSION = frozenset({DatabaseStatus.SUSPENDING.value, DatabaseStatus.SUSPENDED.value, DatabaseStatus.RESUMING.value})


async def reserve(platform: Platform, conn: AsyncConnection, project_id: uuid.UUID, name: str, host_id: str) -> str:
    """Check the project admits a database named ``name`` on ``host_id`` (quota, free name, host
    room), and hold the locks that keep it so until the commit; returns the project's plan.

    Two statements. The first locks the project's row, then the host's transaction lock:
    creations in one project, and on one host, are serialised. The second counts, and under READ
    COMMITTED its snapshot is taken after both locks are held, so it sees every database committed
    before them (the API writes a new database's row in the transaction that accepts it). A full
    host is refused at once with a 503, never left to make tenants wait for a server connection."""
    suspended = sa.exists().where(
        ORGANIZATIONS.c.id == PROJECTS.c.organization_id, ORGANIZATIONS.c.suspended_at.is_not(None)
    )
    locked = (
        sa.select(project_plan(), suspended.label("suspended"))
        .where(PROJECTS.c.id == project_id, PROJECTS.c.deleted_at.is_(None))
        .with_for_update(of=PROJECTS)
        .cte("locked")  # FOR UPDATE keeps the CTE apart: the row is locked before the host below
    )
    host_lock = sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"pgplane.host:{host_id}"))
    project = (await conn.execute(sa.select(locked, host_lock.label("host_locked")))).first()
    if project is None:
        raise not_found("project")
    if project.suspended:
        raise ApiError(409, "organization_suspended", "the organization is suspended: nothing new is created")
    live = DATABASES.c.status.not_in(GONE)
    in_project = sa.and_(live, DATABASES.c.project_id == project_id)
    on_host = sa.and_(live, DATABASES.c.host_id == host_id)
    counted = (
        await conn.execute(
            sa.select(
                sa.select(sa.func.count()).where(in_project).scalar_subquery().label("in_project"),
                sa.exists().where(in_project, DATABASES.c.name == name).label("name_taken"),
                sa.select(sa.func.count()).where(on_host).scalar_subquery().label("on_host"),
            )
        )
    ).one()
    allowed = entitlements(platform.settings, project.plan).databases_per_project
    if counted.in_project >= allowed:
        raise ApiError(
            409,
            "quota_exceeded",
            f"the {project.plan} plan holds at most {allowed} databases per project: delete one, or upgrade",
        )
    if counted.name_taken:
        raise ApiError(409, "name_taken", f"this project already has a database named {name!r}")
    if counted.on_host >= platform.settings.host_max_databases:
        raise ApiError(
            503,
            "capacity_exhausted",
            f"the data host is full ({platform.settings.host_max_databases} databases): no new database can be"
            " placed until one is deleted or capacity is added",
        )
    return str(project.plan)


async def new_identity(
    platform: Platform, conn: AsyncConnection, project_id: uuid.UUID, name: str, *, host_id: str
) -> NewIdentity:
    """Reserve ``name`` in the project, check ``host_id`` has room, and make the identity of a new
    database. Its password's verifier (PBKDF2, the costly part) is made before the reservation's
    locks are taken: creations on one host wait for each other only as long as their statements."""
    database_id = uuid.uuid4()
    password = NewPassword.make(platform, database_id)
    plan = await reserve(platform, conn, project_id, name, host_id)
    await password.store(platform, conn, 1)
    return NewIdentity(
        database_id=database_id,
        dbname=f"db_{database_id.hex}",
        role=f"u_{database_id.hex}",
        password_verifier=password.verifier,
        sealed_password=password.sealed,
        connection_limit=entitlements(platform.settings, plan).connections_per_database,
    )


@dataclass(frozen=True)
class NewPassword:
    """A fresh password for a database: its SCRAM verifier, and the password sealed for the host."""

    database_id: uuid.UUID
    password: str
    verifier: str
    sealed: str

    @classmethod
    def make(cls, platform: Platform, database_id: uuid.UUID) -> NewPassword:
        password = new_password()
        sealed = seal(password, public_key_b64=platform.settings.host_public_key, context=str(database_id))
        return cls(database_id, password, scram_verifier(password), sealed)

    async def store(self, platform: Platform, conn: AsyncConnection, version: int) -> None:
        """Keep it, encrypted, as the database's credentials ``version``."""
        await conn.execute(
            sa.insert(CREDENTIALS).values(
                database_id=self.database_id,
                version=version,
                created_at=datetime.now(UTC),
                password_encrypted=platform.box.encrypt(self.password, context=f"{self.database_id}:{version}"),
            )
        )


async def create_database(
    conn: AsyncConnection, platform: Platform, principal: Principal, project_id: uuid.UUID, name: str
) -> Accepted:
    identity = await new_identity(platform, conn, project_id, name, host_id=platform.settings.host_id)
    command = CreateDatabase(**identity.fields())
    return await accept_operation(
        conn, platform, principal, command, name=name, project_id=project_id, credentials_version=1
    )


async def list_databases(
    conn: AsyncConnection, platform: Platform, projects: Collection[uuid.UUID] | None
) -> DatabasesPublic:
    """These projects' databases, or (``None``) every project's."""
    query = sa.select(DATABASES).order_by(DATABASES.c.created_at)
    if projects is not None:
        query = query.where(DATABASES.c.project_id.in_(projects))
    rows = (await conn.execute(query)).all()
    return DatabasesPublic(data=[database_public(platform, r) for r in rows], count=len(rows))


async def read_credentials(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> Credentials:
    db = await load_live_database(conn, database_id, principal)
    encrypted = (
        await conn.execute(
            sa.select(CREDENTIALS.c.password_encrypted).where(
                CREDENTIALS.c.database_id == database_id, CREDENTIALS.c.version == db.credentials_version
            )
        )
    ).scalar_one()
    password = platform.box.decrypt(encrypted, context=f"{database_id}:{db.credentials_version}")
    read = CredentialsRead(database_id=database_id, credentials_version=db.credentials_version)
    await platform.outbox.event(conn, project_event(read, project_id=db.project_id, actor=principal.actor))
    host, port = platform.settings.pgbouncer_public_host, platform.settings.pgbouncer_port
    return Credentials(
        uri=f"postgresql://{db.role}:{password}@{host}:{port}/{db.dbname}",
        host=host,
        port=port,
        dbname=db.dbname,
        user=db.role,
        password=password,
    )


async def delete_database(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> DeleteAccepted:
    """The database goes; its backups stay restorable for the plan's backup retention."""
    db = await _idle_database(conn, principal, database_id)
    command = DeleteDatabase(database_id=db.id, dbname=db.dbname, role=db.role)
    accepted = await _accept_change(conn, platform, principal, command, db, db.credentials_version)
    plan = (await conn.execute(sa.select(project_plan()).where(PROJECTS.c.id == db.project_id))).scalar_one()
    kept_until = datetime.now(UTC) + timedelta(days=entitlements(platform.settings, plan).backup_retention_days)
    return DeleteAccepted(**accepted.model_dump(), backups_kept_until=kept_until)


async def reset_database(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> Accepted:
    db = await _idle_database(conn, principal, database_id)
    command = ResetDatabase(database_id=db.id, dbname=db.dbname, role=db.role)
    return await _accept_change(conn, platform, principal, command, db, db.credentials_version)


async def rotate_credentials(
    conn: AsyncConnection, platform: Platform, principal: Principal, database_id: uuid.UUID
) -> Accepted:
    db = await _idle_database(conn, principal, database_id)
    latest = (
        await conn.execute(sa.select(sa.func.max(CREDENTIALS.c.version)).where(CREDENTIALS.c.database_id == db.id))
    ).scalar_one()
    version = latest + 1
    password = NewPassword.make(platform, db.id)
    await password.store(platform, conn, version)
    command = RotateCredentials(
        database_id=db.id,
        dbname=db.dbname,
        role=db.role,
        password_verifier=password.verifier,
        sealed_password=password.sealed,
        credentials_version=version,
    )
    return await _accept_change(conn, platform, principal, command, db, version)


async def _idle_database(conn: AsyncConnection, principal: Principal, database_id: uuid.UUID) -> Any:
    db = await load_live_database(conn, database_id, principal, for_update=True)
    if db.status in SUSPENSION:
        raise ApiError(409, "database_suspended", "the database is suspended with its organization")
    await ensure_idle(conn, database_id)
    return db


async def _accept_change(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    command: DeleteDatabase | ResetDatabase | RotateCredentials,
    db: Any,
    version: int,
) -> Accepted:
    return await accept_operation(
        conn,
        platform,
        principal,
        command,
        name=db.name,
        project_id=db.project_id,
        credentials_version=version,
        host_id=db.host_id,
    )
