"""Dropping a database (a delete, a create's undo, a restore's swap) first ends its sessions and
waits until their server processes are gone: PostgreSQL's own wait in ``DROP DATABASE ... WITH
(FORCE)`` looks again only every 100 ms, and a rename refuses a database a process is still on."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from devstack.cluster import Cluster
from infra.host_postgres import HostPostgres, end_sessions_on


async def sessions_on(conn: psycopg.AsyncConnection[tuple[object, ...]], dbname: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,))
    row = await cur.fetchone()
    assert row is not None
    return int(str(row[0]))


def scratch_name() -> str:
    """Not a tenant's name (``db_…``), so nothing that scans the host's tenants sees it."""
    return f"dropping_{uuid.uuid4().hex}"


async def test_ending_sessions_returns_once_their_processes_are_gone(cluster: Cluster) -> None:
    dbname = scratch_name()
    cluster.create_database(dbname)
    sessions = [await psycopg.AsyncConnection.connect(cluster.superuser_dsn(dbname)) for _ in range(3)]
    async with await psycopg.AsyncConnection.connect(cluster.superuser_dsn(), autocommit=True) as conn:
        assert await sessions_on(conn, dbname) == 3
        await end_sessions_on(conn, [dbname])
        assert await sessions_on(conn, dbname) == 0  # at once, with nothing waited for in between
        await conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
    for session in sessions:
        await session.close()


async def test_a_database_with_open_sessions_is_dropped(cluster: Cluster) -> None:
    dbname = scratch_name()
    cluster.create_database(dbname)
    session = await psycopg.AsyncConnection.connect(cluster.superuser_dsn(dbname))
    async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=1, max_size=2, open=False) as pool:
        host = HostPostgres(pool)
        await host.drop_database(dbname)
        assert not await host.database_exists(dbname)
        await host.drop_database(dbname)  # again: nothing to do
    await session.close()
