"""A delete or a reset sets the database (and a delete the role) aside: out of reach at once, the
name free, dropped in the background by the agent's graveyard job, even with the tenant's tables
owned by the role."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from consumers.agent.graveyard import Graveyard
from devstack.cluster import Cluster
from infra.host_postgres import GONE_PREFIX, HostPostgres
from infra.secrets import new_password, scram_verifier


async def catalog(cluster: Cluster, query: str, *params: object) -> tuple[object, ...] | None:
    async with await psycopg.AsyncConnection.connect(cluster.superuser_dsn()) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchone()


async def test_set_aside_then_dropped_in_the_background(cluster: Cluster) -> None:
    ident = uuid.uuid4().hex
    dbname, role, password = f"db_{ident}", f"u_{ident}", new_password()
    async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=1, max_size=4, open=False) as pool:
        postgres = HostPostgres(pool)
        await postgres.lock_down()
        await postgres.ensure_role(role, verifier=scram_verifier(password), connection_limit=5)
        await postgres.ensure_database(dbname, owner=role)
        tenant = await psycopg.AsyncConnection.connect(cluster.superuser_dsn(dbname), autocommit=True)
        await tenant.execute(f"SET ROLE {role}; CREATE TABLE notes (id int)")  # an object the role owns
        found = await catalog(
            cluster,
            "SELECT (SELECT oid FROM pg_database WHERE datname = %s), (SELECT oid FROM pg_roles WHERE rolname = %s)",
            dbname,
            role,
        )
        assert found is not None
        database_oid, role_oid = found

        graveyard = Graveyard(postgres)
        await graveyard.set_aside_database(dbname)  # the tenant's session is still open
        await graveyard.set_aside_role(role)
        assert not await postgres.database_exists(dbname) and not await postgres.role_exists(role)
        with pytest.raises(psycopg.OperationalError):
            await tenant.execute("SELECT 1")  # its session was ended
        aside = await catalog(cluster, "SELECT datname, datallowconn FROM pg_database WHERE oid = %s", database_oid)
        assert aside is not None and str(aside[0]).startswith(GONE_PREFIX) and aside[1] is False
        aside_role = await catalog(cluster, "SELECT rolname, rolcanlogin FROM pg_roles WHERE oid = %s", role_oid)
        assert aside_role is not None and str(aside_role[0]).startswith(GONE_PREFIX) and aside_role[1] is False
        assert dbname not in [name for name, _, _ in await postgres.tenant_databases()]
        assert role not in await postgres.tenant_roles()

        await graveyard.set_aside_database(dbname)  # again (a redelivery): nothing to do
        await graveyard.set_aside_role(role)

        stop = asyncio.Event()
        running = asyncio.create_task(graveyard.run(stop))
        try:
            async with asyncio.timeout(30):
                while await catalog(
                    cluster,
                    "SELECT 1 WHERE EXISTS (SELECT FROM pg_database WHERE oid = %s)"
                    " OR EXISTS (SELECT FROM pg_roles WHERE oid = %s)",
                    database_oid,
                    role_oid,
                ):
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
        await tenant.close()
