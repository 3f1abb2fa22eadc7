"""Schema migrations: a metadata database made by the first release (tables created at start-up,
captured in ``fixtures/``) and an unversioned agent ledger are migrated with their rows; a fresh
migration matches the tables the code declares; processes refuse a schema they do not know."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import infra.metadata.tables  # noqa: F401  (registers the write-side tables)
import readmodel.tables  # noqa: F401
from consumers.agent import ledger_schema
from devstack.cluster import CONTROL_ROLE, Cluster
from infra.metadata import migrate

FIRST_RELEASE_SCHEMA = Path(__file__).parent / "fixtures" / "metadata_schema_131a240.sql"
P, D, B, OP = (uuid.uuid4() for _ in range(4))
ROWS = [
    f"INSERT INTO projects VALUES ('{P}', 'acme', 'free', now())",
    f"INSERT INTO databases VALUES ('{D}', '{P}', 'app', 'host-1', 'db_{D.hex}', 'u_{D.hex}', 'deleted', 1, '{OP}',"
    " NULL, NULL, now() - interval '1 day', now() - interval '1 hour')",
    f"INSERT INTO backups (id, project_id, database_id, status, trigger, object_key, operation_id, created_at,"
    f" updated_at) VALUES ('{B}', '{P}', '{D}', 'completed', 'api', 'backups/{P}/{D}/{B}.pgdump.enc', '{OP}', now(),"
    " now())",
    f"INSERT INTO operations VALUES ('{OP}', '{P}', '{D}', 'delete', 'succeeded', NULL, NULL, NULL, 'admin', 6, now(),"
    " now())",
    f"INSERT INTO api_tokens VALUES ('{uuid.uuid4()}', '{P}', 'ci', 'digest', now(), NULL)",
    "INSERT INTO outbox (msg_id, subject, stream, payload, created_at) VALUES ('m:1', 's', 'S', '\\x00', now())",
    "INSERT INTO projector_checkpoint VALUES ('live', 42)",
]


def fresh_database(cluster: Cluster) -> str:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name, owner=CONTROL_ROLE)
    return cluster.control_dsn(name)


def schema(dsn: str) -> list[tuple[object, ...]]:
    """Every column (type, nullability, default) and index (uniqueness, columns, partial or not)."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        return (
            found
            + conn.execute(
                "SELECT c.relname, i.relname, x.indisunique::text, x.indkey::text, (x.indpred IS NOT NULL)::text"
                " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1, 2"
            ).fetchall()
        )


def test_first_release_database_keeps_its_data(cluster: Cluster) -> None:
    dsn = fresh_database(cluster)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FIRST_RELEASE_SCHEMA.read_text())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row in ROWS:
            conn.execute(row)
    assert migrate.upgrade(dsn) == migrate.FIRST_RELEASE
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (migrate.head(),)
        database = conn.execute("SELECT name, status, deleted_at, updated_at FROM databases").fetchone()
        assert database is not None and database[:2] == ("app", "deleted")
        assert database[2] == database[3]  # a database deleted before the column existed ends its window there
        assert conn.execute("SELECT object_key FROM backups").fetchone() == (f"backups/{P}/{D}/{B}.pgdump.enc",)
        assert conn.execute("SELECT last_sequence FROM projector_checkpoint").fetchone() == (42,)
        assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    assert migrate.upgrade(dsn) == migrate.head()  # a second run finds nothing to do
    assert schema(dsn) == schema(migrated(cluster))  # the same schema as a database migrated from empty


def migrated(cluster: Cluster) -> str:
    dsn = fresh_database(cluster)
    assert migrate.upgrade(dsn) == ""
    return dsn


def test_migrations_make_the_tables_the_code_declares(cluster: Cluster) -> None:
    engine = sa.create_engine(migrate.sync_url(migrated(cluster)), poolclass=sa.NullPool)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert differences == []


def test_processes_refuse_a_database_that_is_not_migrated(cluster: Cluster) -> None:
    env = {"PGPLANE_METADATA_DSN": fresh_database(cluster), "PGPLANE_NATS_URL": cluster.nats_url}
    for process in ("projector", "scheduler"):
        result = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", process], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        assert "run `pgplane migrate metadata`" in result.stderr
        assert "Traceback" not in result.stderr


async def test_an_unversioned_ledger_is_adopted_with_its_rows(cluster: Cluster) -> None:
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)
    async with await psycopg.AsyncConnection.connect(cluster.superuser_dsn(name), autocommit=True) as conn:
        await conn.execute(ledger_schema.MIGRATIONS[0])  # how the first release made it, at every start
        await conn.execute(
            "INSERT INTO host_databases (database_id, dbname, role, max_connections) VALUES (%s, 'db_x', 'u_x', 20)",
            (D,),
        )
        with pytest.raises(ledger_schema.LedgerOutOfDate, match="pgplane migrate ledger"):
            await ledger_schema.check(conn)
        assert await ledger_schema.migrate(conn) == (0, len(ledger_schema.MIGRATIONS))
        await ledger_schema.check(conn)
        assert await ledger_schema.migrate(conn) == (len(ledger_schema.MIGRATIONS),) * 2
        cur = await conn.execute("SELECT dbname FROM host_databases")
        assert await cur.fetchall() == [("db_x",)]
