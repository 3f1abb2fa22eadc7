"""Warm databases: made ahead with no connections allowed, taken by a create in one transaction
(renamed, owned, opened), taken once however often the create runs, never by two creates, made
again by the agent's job after each take, and never reported as tenant databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from consumers.agent.warm_databases import WarmDatabases
from devstack.cluster import Cluster
from infra.host_postgres import WARM_PREFIX, HostPostgres
from infra.secrets import new_password, scram_verifier


@pytest.fixture
async def postgres(cluster: Cluster) -> AsyncIterator[HostPostgres]:
    """The host's PostgreSQL with no warm database left by anything before."""
    async with AsyncConnectionPool(cluster.superuser_dsn(), min_size=1, max_size=4, open=False) as pool:
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            cur = await conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (WARM_PREFIX,))
            for (name,) in await cur.fetchall():
                await conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        host = HostPostgres(pool)
        await host.lock_down()
        yield host


async def tenant(postgres: HostPostgres) -> tuple[str, str]:
    """A new tenant's database name and its role (made)."""
    ident = uuid.uuid4().hex
    dbname, role = f"db_{ident}", f"u_{ident}"
    await postgres.ensure_role(role, verifier=scram_verifier(new_password()), connection_limit=5)
    return dbname, role


async def database(cluster: Cluster, dbname: str) -> tuple[str, bool] | None:
    """Owner and whether it accepts connections."""
    async with await psycopg.AsyncConnection.connect(cluster.superuser_dsn()) as conn:
        cur = await conn.execute(
            "SELECT pg_get_userbyid(datdba), datallowconn FROM pg_database WHERE datname = %s", (dbname,)
        )
        row = await cur.fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


async def test_a_create_takes_a_warm_database_once(postgres: HostPostgres, cluster: Cluster) -> None:
    dbname, role = await tenant(postgres)
    assert not await postgres.take_warm_database(dbname, owner=role)  # none yet: the create makes its own
    assert await database(cluster, dbname) is None

    warm = WarmDatabases(postgres, size=2)
    await warm.fill()
    assert await postgres.warm_databases() == 2
    assert await warm.take(dbname, owner=role)
    assert await database(cluster, dbname) == (role, True)
    assert await postgres.warm_databases() == 1

    assert await warm.take(dbname, owner=role)  # the same create again (a redelivery): nothing more is taken
    assert await postgres.warm_databases() == 1
    assert dbname in [name for name, _, _ in await postgres.tenant_databases()]
    assert not [name for name, _, _ in await postgres.tenant_databases() if name.startswith(WARM_PREFIX)]


async def test_no_one_connects_to_a_warm_database(postgres: HostPostgres, cluster: Cluster) -> None:
    await postgres.make_warm_database()
    async with await psycopg.AsyncConnection.connect(cluster.superuser_dsn()) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (WARM_PREFIX,))
        row = await cur.fetchone()
    assert row is not None
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        await psycopg.AsyncConnection.connect(cluster.superuser_dsn(str(row[0])))


async def test_two_creates_never_take_the_same_warm_database(postgres: HostPostgres, cluster: Cluster) -> None:
    await postgres.make_warm_database()
    (first, first_role), (second, second_role) = await tenant(postgres), await tenant(postgres)
    taken = await asyncio.gather(
        postgres.take_warm_database(first, owner=first_role), postgres.take_warm_database(second, owner=second_role)
    )
    assert sorted(taken) == [False, True]
    made = {name: await database(cluster, name) for name in (first, second)}
    winner, owner = (first, first_role) if taken[0] else (second, second_role)
    assert made.pop(winner) == (owner, True)
    assert list(made.values()) == [None]  # the other one makes its own (``ensure_database``)
    assert await postgres.warm_databases() == 0


async def test_the_job_makes_one_again_after_each_take(postgres: HostPostgres) -> None:
    warm = WarmDatabases(postgres, size=2)
    stop = asyncio.Event()
    job = asyncio.create_task(warm.run(stop))
    try:
        for _ in range(3):
            async with asyncio.timeout(30):
                while await postgres.warm_databases() < 2:
                    await asyncio.sleep(0.05)
            dbname, role = await tenant(postgres)
            assert await warm.take(dbname, owner=role)
        async with asyncio.timeout(30):
            while await postgres.warm_databases() < 2:
                await asyncio.sleep(0.05)
        assert await postgres.warm_databases() == 2  # never more than the setting
    finally:
        stop.set()
        async with asyncio.timeout(5):  # it stops at once, not at its next look
            await job


async def test_none_are_made_or_taken_when_the_setting_is_zero(postgres: HostPostgres) -> None:
    await postgres.make_warm_database()
    warm = WarmDatabases(postgres, size=0)
    await warm.run(asyncio.Event())  # returns at once
    dbname, role = await tenant(postgres)
    assert not await warm.take(dbname, owner=role)
    assert await postgres.warm_databases() == 1
