"""The agent's ledger, in PostgreSQL on the data host.

``ledger_events`` is both the inbox and the saga log: every event an operation emitted, in
order. The steps reached, the outcome, and whether compensation began are all read from it,
and a redelivered command re-publishes exactly these events (same ids).
``host_databases`` is what this host must route in PgBouncer, and the tombstone that stops a
stale command from resurrecting a deleted database. Its schema is versioned
(``ledger_schema``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infra.pgbouncer import Route
from schemas.envelope import Envelope

_ROUTES = (
    "SELECT database_id, dbname, role, verifier, max_connections FROM host_databases"
    " WHERE routed AND deleted_at IS NULL AND verifier IS NOT NULL"
)


class Ledger:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def history(self, operation_id: uuid.UUID) -> list[Envelope]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT envelope FROM ledger_events WHERE operation_id = %s ORDER BY sequence", (operation_id,)
            )
            return [Envelope.model_validate(row[0]) for row in await cur.fetchall()]

    async def record(self, envelope: Envelope) -> str | None:
        """Record the event (a second time does nothing) and return who asked to cancel its
        operation, if anyone did: read by the same statement, so a saga knows before its next step
        without a round trip of its own."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "WITH recorded AS (INSERT INTO ledger_events (operation_id, sequence, type, envelope)"
                " VALUES (%(operation)s, %(sequence)s, %(type)s, %(envelope)s) ON CONFLICT DO NOTHING)"
                " SELECT actor FROM cancel_requests WHERE operation_id = %(operation)s",
                {
                    "operation": envelope.correlation_id,
                    "sequence": envelope.sequence,
                    "type": envelope.type,
                    "envelope": Jsonb(envelope.model_dump(mode="json")),
                },
            )
            row = await cur.fetchone()
            return row[0] if row else None

    async def note_failure(self, operation_id: uuid.UUID, error: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO ledger_failures VALUES (%s, 1, %s) ON CONFLICT (operation_id)"
                " DO UPDATE SET attempts = ledger_failures.attempts + 1, last_error = EXCLUDED.last_error",
                (operation_id, error[:2000]),
            )

    async def last_error(self, operation_id: uuid.UUID) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT last_error FROM ledger_failures WHERE operation_id = %s", (operation_id,))
            row = await cur.fetchone()
            return row[0] if row else None

    async def remember_database(self, database_id: uuid.UUID, *, dbname: str, role: str, max_connections: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO host_databases (database_id, dbname, role, max_connections) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (database_id) DO NOTHING",
                (database_id, dbname, role, max_connections),
            )

    async def is_deleted(self, database_id: uuid.UUID) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT deleted_at FROM host_databases WHERE database_id = %s", (database_id,))
            row = await cur.fetchone()
            return row is not None and row[0] is not None

    async def clear_tombstone(self, database_id: uuid.UUID) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE host_databases SET deleted_at = NULL WHERE database_id = %s", (database_id,))

    async def tombstone(self, database_id: uuid.UUID, *, dbname: str, role: str) -> None:
        """Mark the database deleted (remembered first when this host never had it), in one
        statement; the time of the first tombstone stays."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO host_databases (database_id, dbname, role, max_connections, deleted_at)"
                " VALUES (%s, %s, %s, 1, now())"
                " ON CONFLICT (database_id) DO UPDATE SET deleted_at = coalesce(host_databases.deleted_at, now())",
                (database_id, dbname, role),
            )

    async def set_suspended(self, database_id: uuid.UUID, suspended: bool) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE host_databases SET suspended = %s WHERE database_id = %s", (suspended, database_id)
            )

    async def is_suspended(self, database_id: uuid.UUID) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT suspended FROM host_databases WHERE database_id = %s", (database_id,))
            row = await cur.fetchone()
            return row is not None and bool(row[0])

    async def set_route(self, database_id: uuid.UUID, *, routed: bool) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE host_databases SET routed = %s WHERE database_id = %s", (routed, database_id))

    async def set_verifier(self, database_id: uuid.UUID, verifier: str, *, route: bool = False) -> None:
        """Keep the previous verifier so a failed rotation can put it back; twice is once. With
        ``route``, the database is routed in the same statement (a create's route)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE host_databases SET routed = routed OR %(route)s, verifier = %(verifier)s,"
                " previous_verifier = CASE WHEN verifier IS DISTINCT FROM %(verifier)s THEN verifier"
                " ELSE previous_verifier END WHERE database_id = %(id)s",
                {"route": route, "verifier": verifier, "id": database_id},
            )

    async def restore_previous_verifier(self, database_id: uuid.UUID, *, replaced: str) -> None:
        """Undo ``set_verifier(database_id, replaced)``; nothing when ``replaced`` is not the live one
        (never set, or already undone), so running it twice never reaches further back."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE host_databases SET verifier = previous_verifier, previous_verifier = NULL"
                " WHERE database_id = %s AND verifier = %s AND previous_verifier IS NOT NULL",
                (database_id, replaced),
            )

    async def verifier(self, database_id: uuid.UUID) -> str | None:
        """The verifier PgBouncer routes the database with."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT verifier FROM host_databases WHERE database_id = %s", (database_id,))
            row = await cur.fetchone()
            return row[0] if row else None

    async def routes(self) -> list[Route]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_ROUTES)
            return [Route._make(row) for row in await cur.fetchall()]

    async def route(self, database_id: uuid.UUID) -> Route | None:
        """The database's route (``None``: not routed, deleted, or without a verifier yet)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_ROUTES + " AND database_id = %s", (database_id,))
            row = await cur.fetchone()
            return Route._make(row) if row else None

    # --- WAL archive and base backups (point-in-time restore) -------------------------------

    async def record_segment(self, segment: str, *, size_bytes: int, sha256: str, archived_at: datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO wal_archive VALUES (%s, %s, %s, %s) ON CONFLICT (segment) DO UPDATE"
                " SET size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, archived_at = EXCLUDED.archived_at",
                (segment, size_bytes, sha256, archived_at),
            )

    async def segments_from(self, first: str) -> list[ArchivedSegment]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(ArchivedSegment)) as cur:
            await cur.execute(
                "SELECT segment, size_bytes, sha256, archived_at FROM wal_archive WHERE segment >= %s ORDER BY segment",
                (first,),
            )
            return await cur.fetchall()

    async def forget_segments_before(self, segment: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM wal_archive WHERE segment < %s", (segment,))

    async def record_base_backup(self, base: BaseBackup) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO base_backups (id, object_key, sha256, size_bytes, start_segment, stop_segment,"
                " started_at, finished_at, database_oids, parts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    base.id,
                    base.object_key,
                    base.sha256,
                    base.size_bytes,
                    base.start_segment,
                    base.stop_segment,
                    base.started_at,
                    base.finished_at,
                    None if base.database_oids is None else Jsonb(base.database_oids),
                    None if base.parts is None else Jsonb(base.parts),
                ),
            )

    async def base_backups(self) -> list[BaseBackup]:
        """Live base backups, oldest first."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(BaseBackup)) as cur:
            await cur.execute(
                "SELECT id, object_key, sha256, size_bytes, start_segment, stop_segment, started_at, finished_at,"
                " database_oids, parts FROM base_backups WHERE deleted_at IS NULL ORDER BY finished_at"
            )
            return await cur.fetchall()

    async def base_backup(self, base_id: uuid.UUID) -> BaseBackup | None:
        return next((b for b in await self.base_backups() if b.id == base_id), None)

    async def delete_base_backup(self, base_id: uuid.UUID) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE base_backups SET deleted_at = now() WHERE id = %s", (base_id,))

    async def request_cancel(self, operation_id: uuid.UUID, actor: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO cancel_requests VALUES (%s, %s) ON CONFLICT DO NOTHING", (operation_id, actor)
            )

    async def cancel_requested(self, operation_id: uuid.UUID) -> str | None:
        """Who asked to cancel the operation, if anyone did."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT actor FROM cancel_requests WHERE operation_id = %s", (operation_id,))
            row = await cur.fetchone()
            return row[0] if row else None


@dataclass(frozen=True, kw_only=True)
class ArchivedSegment:
    segment: str
    size_bytes: int
    sha256: str
    archived_at: datetime


@dataclass(frozen=True, kw_only=True)
class BaseBackup:
    id: uuid.UUID
    object_key: str
    sha256: str
    size_bytes: int
    start_segment: str
    stop_segment: str
    started_at: datetime
    finished_at: datetime
    database_oids: dict[str, int] | None = None
    """Each database's OID (its directory under ``base/``) when the backup began; unknown for
    base backups of earlier releases."""
    parts: dict[str, StoredPart] | None = None
    """The databases' directories stored apart, by OID; ``object_key`` holds everything else.
    None for base backups of earlier releases, stored whole."""

    @property
    def total_bytes(self) -> int:
        return self.size_bytes + sum(part["size_bytes"] for part in (self.parts or {}).values())


class StoredPart(TypedDict):
    object_key: str
    sha256: str
    size_bytes: int
