"""DDL against a data host's PostgreSQL. Every identifier goes through ``sql.Identifier``.

Each function checks reality first, so running it twice does nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

TENANTS = "pgplane_tenants"
"""The group role of every tenant role: pg_hba refuses it anywhere but PgBouncer's socket."""
WARM_PREFIX = "warm_"
"""Databases made ahead of the creates that take them (``take_warm_database``)."""
log = logging.getLogger("pgplane.host_postgres")
GONE_PREFIX = "gone_"
"""Databases and roles set aside by a delete or a reset, dropped in the background (``drop_gone``)."""
SESSIONS_GONE_SECONDS = 2.0
"""How long ending a database's sessions waits for their server processes to exit."""
SESSIONS_GONE_POLL_SECONDS = 0.002


class HostPostgres:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def _exists(self, query: str, name: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, (name,))
            return await cur.fetchone() is not None

    async def role_exists(self, role: str) -> bool:
        return await self._exists("SELECT 1 FROM pg_roles WHERE rolname = %s", role)

    async def database_exists(self, dbname: str) -> bool:
        return await self._exists("SELECT 1 FROM pg_database WHERE datname = %s", dbname)

    async def lock_down(self) -> None:
        """What every data host needs before tenants arrive (idempotent, run at agent start): the
        tenants' group role, which pg_hba admits only through PgBouncer's socket; no CONNECT for
        PUBLIC on ``postgres`` and ``template1``, where the catalog lists every tenant."""
        if not await self.role_exists(TENANTS):
            await self._ddl(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(TENANTS)))
        for dbname in ("postgres", "template1"):
            await self._ddl(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))

    async def ensure_role(self, role: str, *, verifier: str, connection_limit: int, login: bool = True) -> None:
        """A login role (``login=False``: a suspended tenant's) that can do nothing but own its
        database, in the tenants' group, whose failing statements PostgreSQL never writes to its
        log (they could hold a password): all three in one transaction, so no role can log in
        unconfined (and one commit instead of three)."""
        verb = "ALTER" if await self.role_exists(role) else "CREATE"
        options = sql.SQL(
            ("LOGIN" if login else "NOLOGIN") + " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            " CONNECTION LIMIT {limit} PASSWORD {verifier}"
        ).format(limit=sql.Literal(connection_limit), verifier=sql.Literal(verifier))
        made = sql.SQL(verb + " ROLE {role} WITH {options}").format(role=sql.Identifier(role), options=options)
        await self._ddl(sql.SQL("; ").join([made, *_confinement(role)]))  # one query: one implicit transaction

    async def confine(self, role: str) -> None:
        """Put a tenant role in the tenants' group and keep its statements out of the log (idempotent)."""
        await self._ddl(sql.SQL("; ").join(_confinement(role)))

    async def verifier(self, role: str) -> str | None:
        """The password verifier PostgreSQL holds for ``role`` (a tenant can change its own)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            row = await cur.fetchone()
            return row[0] if row else None

    async def end_sessions(self, role: str) -> None:
        """Every session of ``role`` on this server ends now."""
        async with self._pool.connection() as conn:
            await conn.execute(_END_SESSIONS_OF_ROLE, (role,))

    async def set_login(self, role: str, *, allowed: bool) -> None:
        """Whether ``role`` may log in (a suspended tenant may not); idempotent."""
        option = sql.SQL("LOGIN" if allowed else "NOLOGIN")
        await self._ddl(sql.SQL("ALTER ROLE {role} WITH {option}").format(role=sql.Identifier(role), option=option))

    async def set_password(self, role: str, *, verifier: str) -> None:
        await self._ddl(
            sql.SQL("ALTER ROLE {role} WITH PASSWORD {verifier}").format(
                role=sql.Identifier(role), verifier=sql.Literal(verifier)
            )
        )

    async def drop_role(self, role: str) -> None:
        await self._ddl(sql.SQL("DROP ROLE IF EXISTS {role}").format(role=sql.Identifier(role)))

    async def ensure_database(self, dbname: str, *, owner: str) -> None:
        if not await self.database_exists(dbname):
            await self._ddl(
                sql.SQL("CREATE DATABASE {db} OWNER {owner}").format(
                    db=sql.Identifier(dbname), owner=sql.Identifier(owner)
                )
            )

    async def take_warm_database(self, dbname: str, *, owner: str) -> bool:
        """``dbname`` made from a warm database, renamed and given ``owner`` in one transaction (a
        catalog update, against ``CREATE DATABASE``'s copy of the template's files); ``True`` also
        when ``dbname`` is there already (one database's commands run one at a time, so nothing
        makes it meanwhile), ``False`` when no warm database could be taken."""
        if await self.database_exists(dbname):
            return True
        async with self._pool.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname LIMIT 1",
                        (WARM_PREFIX,),
                    )
                    row = await cur.fetchone()
                    if row is None:
                        return False
                    warm, db, role = sql.Identifier(row[0]), sql.Identifier(dbname), sql.Identifier(owner)
                    await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(warm, db))
                    await conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role))
                    await conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(db))
                    return True
            except (psycopg.errors.InvalidCatalogName, psycopg.errors.ObjectInUse):
                return False  # another create took it first, or something is connected to it

    async def warm_databases(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)", (WARM_PREFIX,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def make_warm_database(self) -> None:
        """One more warm database, which no one may connect to until it is taken."""
        name = sql.Identifier(f"{WARM_PREFIX}{uuid.uuid4().hex}")
        await self._ddl(sql.SQL("CREATE DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))

    async def revoke_public(self, dbname: str, *, owner: str) -> None:
        """Only the owner may connect; PUBLIC keeps nothing (both are no-ops when already so)."""
        await self._ddl(
            sql.SQL("REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT ALL ON DATABASE {db} TO {owner}").format(
                db=sql.Identifier(dbname), owner=sql.Identifier(owner)
            )
        )

    async def drop_database(self, dbname: str) -> None:
        """Ends every session on it first (``end_sessions_on``; ``WITH (FORCE)`` ends any that
        came meanwhile)."""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            await end_sessions_on(conn, [dbname])
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {db} WITH (FORCE)").format(db=sql.Identifier(dbname)))

    async def tenant_databases(self) -> list[tuple[str, str, int]]:
        """Every tenant-named database: (name, owner, size in bytes)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT d.datname, pg_get_userbyid(d.datdba), pg_database_size(d.oid) FROM pg_database d"
                " WHERE d.datname ~ '^db_[0-9a-f]{32}$' ORDER BY d.datname"
            )
            return [(str(name), str(owner), int(size)) for name, owner, size in await cur.fetchall()]

    async def tenant_roles(self) -> dict[str, str | None]:
        """Every tenant-named role and the password verifier PostgreSQL holds for it."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname ~ '^u_[0-9a-f]{32}$' ORDER BY rolname"
            )
            return {str(name): verifier for name, verifier in await cur.fetchall()}

    async def wal_lsn(self) -> str:
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
            assert row is not None
            return str(row[0])

    async def database_owner(self, dbname: str) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,))
            row = await cur.fetchone()
            return str(row[0]) if row else None

    async def set_owner(self, dbname: str, owner: str) -> None:
        await self._ddl(
            sql.SQL("ALTER DATABASE {db} OWNER TO {owner}").format(
                db=sql.Identifier(dbname), owner=sql.Identifier(owner)
            )
        )

    async def database_oids(self) -> dict[str, int]:
        """Every database's OID: the name of its directory under ``base/``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT datname, oid FROM pg_database")
            return {str(name): int(oid) for name, oid in await cur.fetchall()}

    async def current_wal_segment(self) -> str:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

    async def seal_wal(self) -> str:
        """Commit a transaction, switch WAL segments; returns the name of the segment just finished."""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("SELECT txid_current()")
            cur = await conn.execute("SELECT pg_walfile_name(pg_switch_wal())")
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

    async def rename_database(self, name: str, new_name: str) -> None:
        await self._ddl(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name))
        )

    async def swap_databases(self, *, live: str, replacement: str, keep_as: str) -> None:
        """In ONE transaction: ``live`` becomes ``keep_as`` and ``replacement`` becomes ``live``."""
        rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
        await self._free_and_alter(
            [live, replacement],
            [
                rename.format(sql.Identifier(live), sql.Identifier(keep_as)),
                rename.format(sql.Identifier(replacement), sql.Identifier(live)),
            ],
        )

    async def set_aside_database(self, dbname: str) -> None:
        """``dbname`` out of everyone's reach at once, its space freed soon after: its sessions
        ended, closed to connections and renamed ``gone_<hex>`` in one transaction, to be dropped
        by ``drop_gone``. A catalog update of a few milliseconds, where ``DROP DATABASE`` has
        PostgreSQL 15 checkpoint the whole cluster first (100 ms and more on a busy host). Nothing
        when it is not there."""
        if not await self.database_exists(dbname):
            return
        db = sql.Identifier(dbname)
        await self._free_and_alter(
            [dbname],
            [
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db),
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(db, sql.Identifier(_gone_name())),
            ],
        )

    async def set_aside_role(self, role: str) -> None:
        """``role`` may no longer log in and is renamed ``gone_<hex>`` (in one transaction), to be
        dropped by ``drop_gone`` once the databases set aside, which it may own or hold objects
        in, are gone. Nothing when it is not there."""
        if not await self.role_exists(role):
            return
        name = sql.Identifier(role)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN").format(name))
            await conn.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(name, sql.Identifier(_gone_name())))

    async def drop_gone(self) -> None:
        """Drop every database set aside, then every role (one still holding objects somewhere is
        left for the next time, and logged)."""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            cur = await conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (GONE_PREFIX,))
            for (name,) in await cur.fetchall():
                await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur = await conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (GONE_PREFIX,))
            for (name,) in await cur.fetchall():
                try:
                    await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                except psycopg.errors.DependentObjectsStillExist as exc:
                    log.warning("role %s was set aside but cannot be dropped yet: %s", name, exc)

    async def _free_and_alter(self, dbnames: list[str], statements: list[sql.Composed]) -> None:
        """End every session on ``dbnames``, then run ``statements`` in one transaction. Renaming
        needs the databases free of sessions: one that races in makes the transaction fail whole,
        and it is all tried again."""
        for attempt in range(50):
            async with self._pool.connection() as conn:
                await conn.set_autocommit(True)
                await end_sessions_on(conn, dbnames)
                try:
                    async with conn.transaction():
                        for statement in statements:
                            await conn.execute(statement)
                    return
                except psycopg.errors.ObjectInUse:
                    if attempt == 49:
                        raise
            await asyncio.sleep(0.1)

    async def _ddl(self, statement: sql.Composed) -> None:
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute(statement)


# The server processes to end or wait for, read from the backend status functions: with a thousand
# sessions open, a look at ``pg_stat_activity`` (every column of every backend, joined with the
# catalogs) took 1.7 ms, one of these 0.35 ms.
_ON_DATABASES = "pg_stat_get_backend_dbid(s) IN (SELECT oid FROM pg_database WHERE datname = ANY(%s))"
_END = "SELECT pg_terminate_backend(pg_stat_get_backend_pid(s)) FROM pg_stat_get_backend_idset() AS s WHERE "
_END_SESSIONS_ON = _END + _ON_DATABASES
_END_SESSIONS_OF_ROLE = _END + "pg_stat_get_backend_userid(s) = (SELECT oid FROM pg_roles WHERE rolname = %s)"
_SESSIONS_ON = "SELECT 1 FROM pg_stat_get_backend_idset() AS s WHERE " + _ON_DATABASES


def _confinement(role: str) -> list[sql.Composed]:
    return [
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(TENANTS), sql.Identifier(role)),
        sql.SQL("ALTER ROLE {} SET log_min_error_statement = 'panic'").format(sql.Identifier(role)),
    ]


def _gone_name() -> str:
    return f"{GONE_PREFIX}{uuid.uuid4().hex}"


async def end_sessions_on(conn: psycopg.AsyncConnection[tuple[object, ...]], dbnames: list[str]) -> None:
    """End every session on ``dbnames`` and wait until their server processes are gone, for up to
    ``SESSIONS_GONE_SECONDS`` (``conn`` in autocommit, so each look reads the backends afresh).

    ``DROP DATABASE`` and ``ALTER DATABASE ... RENAME`` refuse a database a server process is
    still on, and one just told to end is still on it for a few milliseconds: ``DROP ... WITH
    (FORCE)`` then sleeps 100 ms before it looks again (a reset with its tenant connected, say: the
    DROP of a database with an open session took 113 ms that way, 16 ms after this wait), and a
    rename fails and is tried again 100 ms later. Whatever is left after the wait is left to that
    statement."""
    cur = await conn.execute(_END_SESSIONS_ON, (dbnames,))
    if not await cur.fetchall():
        return  # there were none
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSIONS_GONE_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(SESSIONS_GONE_POLL_SECONDS)
        cur = await conn.execute(_SESSIONS_ON, (dbnames,))
        if not await cur.fetchall():
            return


async def check_login(*, host: str, port: int, dbname: str, user: str, password: str) -> None:
    """Open a real session and ask who we are; raises ``psycopg.OperationalError`` on refusal."""
    async with await psycopg.AsyncConnection.connect(
        host=host, port=port, dbname=dbname, user=user, password=password, connect_timeout=5
    ) as conn:
        cur = await conn.execute("SELECT current_user, current_database()")
        row = await cur.fetchone()
        if row != (user, dbname):
            raise psycopg.OperationalError(f"logged in as {row}, expected {(user, dbname)}")
