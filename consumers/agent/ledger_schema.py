"""Versioned migrations of the agent's ledger, run by ``pgplane migrate ledger``.

``MIGRATIONS[n - 1]`` takes the ledger to version ``n``; the version is kept in
``ledger_schema_version``. Version 1 is the first release's schema, created ``IF NOT EXISTS`` so
a ledger made before versioning is adopted with its rows. The agent never migrates: it checks
the version at start and refuses to run against one this release does not know.
"""

from __future__ import annotations

from psycopg import AsyncConnection

LOCK = "SELECT pg_advisory_xact_lock(hashtext('pgplane ledger migrations'))"
MIGRATIONS = [
    """
CREATE TABLE IF NOT EXISTS ledger_events (
    operation_id uuid NOT NULL,
    sequence integer NOT NULL,
    type text NOT NULL,
    envelope jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation_id, sequence)
);
CREATE TABLE IF NOT EXISTS ledger_failures (
    operation_id uuid PRIMARY KEY,
    attempts integer NOT NULL,
    last_error text NOT NULL
);
CREATE TABLE IF NOT EXISTS host_databases (
    database_id uuid PRIMARY KEY,
    dbname text NOT NULL,
    role text NOT NULL,
    verifier text,
    previous_verifier text,
    max_connections integer NOT NULL,
    routed boolean NOT NULL DEFAULT false,
    deleted_at timestamptz
);
CREATE TABLE IF NOT EXISTS wal_archive (
    segment text PRIMARY KEY,
    size_bytes bigint NOT NULL,
    sha256 text NOT NULL,
    archived_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS base_backups (
    id uuid PRIMARY KEY,
    object_key text NOT NULL,
    sha256 text NOT NULL,
    size_bytes bigint NOT NULL,
    start_segment text NOT NULL,
    stop_segment text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    deleted_at timestamptz
);
CREATE TABLE IF NOT EXISTS cancel_requests (
    operation_id uuid PRIMARY KEY,
    actor text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
""",
    # 2: which database each data directory under base/ holds, so a restore unpacks only its own
    """
ALTER TABLE base_backups ADD COLUMN IF NOT EXISTS database_oids jsonb;
""",
    # 3: each database's directory stored as an object of its own, so a restore fetches only its own
    """
ALTER TABLE base_backups ADD COLUMN IF NOT EXISTS parts jsonb;
""",
    # 4: a suspended database's role must not log in, even when a repair has to make it again
    """
ALTER TABLE host_databases ADD COLUMN IF NOT EXISTS suspended boolean NOT NULL DEFAULT false;
""",
]


class LedgerOutOfDate(Exception):
    """The ledger is not at the version this release needs."""


async def version(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT to_regclass('ledger_schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT version FROM ledger_schema_version")
    found = await cur.fetchone()
    return int(found[0]) if found else 0


async def migrate(conn: AsyncConnection) -> tuple[int, int]:
    """Bring the ledger to the latest version in one transaction; returns the versions before and after."""
    async with conn.transaction():
        await conn.execute(LOCK)
        before = await version(conn)
        for statement in MIGRATIONS[before:]:
            await conn.execute(statement)
        await conn.execute("CREATE TABLE IF NOT EXISTS ledger_schema_version (version integer NOT NULL)")
        await conn.execute("DELETE FROM ledger_schema_version")
        await conn.execute("INSERT INTO ledger_schema_version VALUES (%s)", (len(MIGRATIONS),))
    return before, len(MIGRATIONS)


async def check(conn: AsyncConnection) -> None:
    """``LedgerOutOfDate`` unless the ledger is at the latest version."""
    found = await version(conn)
    if found != len(MIGRATIONS):
        raise LedgerOutOfDate(
            f"the agent ledger is at version {found}, this release needs {len(MIGRATIONS)}:"
            " run `pgplane migrate ledger`"
        )
