"""pg_dump as a stream: the backup compression level reaches it (the same database dumps larger at
level 0 than at level 9, each dump a complete custom-format archive), and a reader that stops
early (a backup over its plan limit) gets the tool killed and its exit collected at once."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from devstack.cluster import Cluster
from infra.pg_tools import pg_dump


async def dumped(cluster: Cluster, dbname: str, level: int | None) -> bytes:
    out = bytearray()
    async with pg_dump(cluster.superuser_dsn(), dbname, compression=level) as dump:
        async for piece in dump:
            out += piece
    return bytes(out)


def database_of_some_megabytes(cluster: Cluster) -> str:
    dbname = f"dump_{uuid.uuid4().hex[:10]}"
    cluster.create_database(dbname)
    with psycopg.connect(cluster.superuser_dsn(dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 8) AS body FROM generate_series(1, 20000) g")
    return dbname


async def test_the_level_changes_the_dump(cluster: Cluster) -> None:
    dbname = database_of_some_megabytes(cluster)
    plain, default, smallest = [await dumped(cluster, dbname, level) for level in (0, None, 9)]
    assert all(d.startswith(b"PGDMP") for d in (plain, default, smallest))
    assert len(plain) > 2 * len(default) >= 2 * len(smallest), (len(plain), len(default), len(smallest))


async def test_a_reader_that_stops_early_does_not_wait_forever(cluster: Cluster) -> None:
    dbname = database_of_some_megabytes(cluster)
    for _ in range(3):
        async with asyncio.timeout(60):  # leaving the block kills pg_dump and collects its exit
            async with pg_dump(cluster.superuser_dsn(), dbname, compression=0) as dump:
                async for _piece in dump:
                    await asyncio.sleep(0.5)  # pg_dump fills the reader's buffer, which pauses its pipe
                    break
