"""The backup compression level reaches pg_dump: the same database dumps larger at level 0 than
at level 9, and each dump is a complete custom-format archive."""

from __future__ import annotations

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


async def test_the_level_changes_the_dump(cluster: Cluster) -> None:
    dbname = f"dump_{uuid.uuid4().hex[:10]}"
    cluster.create_database(dbname)
    with psycopg.connect(cluster.superuser_dsn(dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 8) AS body FROM generate_series(1, 20000) g")
    plain, default, smallest = [await dumped(cluster, dbname, level) for level in (0, None, 9)]
    assert all(d.startswith(b"PGDMP") for d in (plain, default, smallest))
    assert len(plain) > 2 * len(default) >= 2 * len(smallest), (len(plain), len(default), len(smallest))
