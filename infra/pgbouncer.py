"""PgBouncer routes: the agent owns ``databases.ini`` and ``userlist.txt`` and reloads.

``pgbouncer.ini`` (written once by whoever deploys PgBouncer) ends with
``%include databases.ini``. The files are rewritten whole, atomically (write + rename), then the
admin console is told to ``RELOAD``: the ledger is the source of truth, so a rewrite is
idempotent and a crash between write and reload heals on the next one.

The lines come from the ledger: all of them when the agent starts (``apply``), and after that one
database's at a time (``apply_one``; the others are kept from before, so a change costs the same
with a thousand routes as with one). Either reads the ledger under the route lock, so a full
reading never overwrites a newer change to one database. Changes made at once share a reload:
one that began after a change's files were written carries it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import psycopg

from infra.secrets import scram_verifier

ADMIN_USER = "pgbouncer_admin"
SERVER_IDLE_TIMEOUT = 10
"""Seconds an unused server connection stays open (PgBouncer's default, 600, let the login check
of every new database hold a PostgreSQL backend for ten minutes: a burst of creations filled
``max_connections``)."""
QUERY_WAIT_TIMEOUT = 30
"""Seconds a client waits for a server connection before a clear error (PgBouncer's default: 120)."""


class Route(NamedTuple):
    """A database PgBouncer routes, and its role's login (a tuple: the ledger reads a thousand of
    them for every change, and a row becomes one at a tenth of a dataclass's cost)."""

    database_id: uuid.UUID
    dbname: str
    role: str
    verifier: str
    max_connections: int


def pgbouncer_ini(*, port: int, directory: Path, pool_mode: str = "session") -> str:
    return f"""[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory / "userlist.txt"}
admin_users = {ADMIN_USER}
pool_mode = {pool_mode}
max_client_conn = 4000
default_pool_size = 10
server_idle_timeout = {SERVER_IDLE_TIMEOUT}
query_wait_timeout = {QUERY_WAIT_TIMEOUT}
ignore_startup_parameters = extra_float_digits,options
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
%include {directory / "databases.ini"}
"""


class RoutesNotLoaded(RuntimeError):
    """One database's route was changed before the whole set was read (``apply``)."""


class PgBouncer:
    def __init__(self, *, directory: Path, port: int, admin_password: str, server_host: str, server_port: int) -> None:
        self._dir = directory
        self._port = port
        self._admin_password = admin_password
        self._admin_verifier = scram_verifier(admin_password)
        self._server = f"host={server_host} port={server_port}"
        self._lock = asyncio.Lock()
        self._lines: dict[str, tuple[str, str]] | None = None
        """Each routed database's line in ``databases.ini`` and its role's in ``userlist.txt``, as
        last written (``None``: this process has not read the routes yet)."""
        self._written = 0
        """How many times the files were written."""
        self._files_hold_lines = False
        """Whether the files hold ``_lines`` (not after a write that failed)."""
        self._reloaded = 0
        """How many writes the last ``RELOAD`` began after."""
        self._console: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._console_lock = asyncio.Lock()

    async def apply(self, read: Callable[[], Awaitable[list[Route]]]) -> None:
        """Make PgBouncer route exactly the routes ``read`` returns (plus the admin console)."""
        async with self._lock:
            self._lines = {route.dbname: self._lines_of(route) for route in await read()}
            written = self._write()
        await self._reload(written)

    async def apply_one(self, dbname: str, read: Callable[[], Awaitable[Route | None]]) -> None:
        """Route ``dbname`` as ``read`` says now (``None``: not at all), the others as before."""
        async with self._lock:
            if self._lines is None:
                raise RoutesNotLoaded(f"the route of {dbname} changed before the routes were read")
            route = await read()
            before = self._lines.pop(dbname, None)
            if route is not None:
                self._lines[dbname] = self._lines_of(route)
            after = self._lines.get(dbname)
            if before == after and self._files_hold_lines:
                written = self._written  # no change: only a reload the last one may still owe
            elif before is None or after is None or not self._files_hold_lines:
                written = self._write()
            else:  # a rotation changes only the login's line
                written = self._write(databases=before[0] != after[0], users=before[1] != after[1])
        await self._reload(written)

    def write_files(self, routes: list[Route]) -> None:
        """Write the files for ``routes`` (a new PgBouncer's, before it starts: no reload)."""
        self._lines = {route.dbname: self._lines_of(route) for route in routes}
        self._write()

    def _lines_of(self, r: Route) -> tuple[str, str]:
        return (
            f"{r.dbname} = {self._server} dbname={r.dbname} pool_size={r.max_connections}"
            f" max_db_connections={r.max_connections}",
            f'"{r.role}" "{r.verifier}"',
        )

    def _write(self, databases: bool = True, users: bool = True) -> int:
        """Rewrite the routes file, the logins file, or both; returns the write's number."""
        assert self._lines is not None
        self._files_hold_lines = False
        ordered = sorted(self._lines.items())  # the same routes, the same files
        if databases:
            text = "\n".join(["[databases]", *(line for _, (line, _) in ordered)])
            _replace(self._dir / "databases.ini", text + "\n", mode=0o644)
        if users:
            text = "\n".join([f'"{ADMIN_USER}" "{self._admin_verifier}"', *(line for _, (_, line) in ordered)])
            _replace(self._dir / "userlist.txt", text + "\n", mode=0o600)
        self._files_hold_lines = True
        self._written += 1
        return self._written

    async def _reload(self, written: int) -> None:
        """Have PgBouncer read the files as they were after write number ``written`` (or later): a
        ``RELOAD`` that began after it, this one's or another change's."""
        async with self._lock:
            if self._reloaded >= written:
                return
            reloading = self._written
            await self.admin("RELOAD")
            self._reloaded = reloading

    async def disconnect(self, dbname: str) -> None:
        """Drop every client and server connection of one database, then let new ones in."""
        async with self._lock:
            try:
                await self.admin(f"KILL {dbname}")
            except psycopg.Error:
                return  # not routed (any more): nothing to disconnect
            await self.admin(f"RESUME {dbname}")

    @contextlib.asynccontextmanager
    async def paused(self, dbname: str) -> AsyncIterator[None]:
        """Inside the block no session reaches ``dbname`` through PgBouncer: existing ones are
        dropped and new clients wait (they are let in on exit, even after an error)."""
        async with self._lock:
            try:
                await self.admin(f"KILL {dbname}")
            except psycopg.Error:
                yield  # not routed: nobody reaches it through us
                return
            try:
                yield
            finally:
                await self.admin(f"RESUME {dbname}")

    async def routed(self) -> list[str]:
        """The databases PgBouncer routes now (``SHOW DATABASES``, without its own console)."""
        rows = await self.admin("SHOW DATABASES")
        return sorted(str(row[0]) for row in rows if row[0] != "pgbouncer")

    async def admin(self, command: str) -> list[tuple[object, ...]]:
        """One admin console command, on a connection kept open between commands: opening one
        costs a SCRAM login (about 6 ms here), thirty times the work of a ``RELOAD``."""
        async with self._console_lock:
            reused = self._console is not None
            try:
                return await self._on_console(command)
            except psycopg.Error:
                if not reused or self._console is not None:
                    raise  # a new connection failed, or the command's own error (the console still serves)
            # PgBouncer had closed the kept connection (a restart): once more on a new one. Every
            # command sent here has the same effect when repeated.
            return await self._on_console(command)

    async def _on_console(self, command: str) -> list[tuple[object, ...]]:
        if self._console is None:
            self._console = await self._connect()
        try:
            cur = await self._console.execute(command)
            return await cur.fetchall() if cur.description else []
        except psycopg.Error:
            if self._console.broken:
                await self.close()
            raise

    async def close(self) -> None:
        if self._console is not None:
            await self._console.close()
            self._console = None

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(
            host="127.0.0.1",
            port=self._port,
            dbname="pgbouncer",
            user=ADMIN_USER,
            password=self._admin_password,
            autocommit=True,
            connect_timeout=5,
            prepare_threshold=None,  # the console speaks only the simple query protocol
        )


def _replace(path: Path, text: str, *, mode: int) -> None:
    """Atomic rewrite that keeps the directory owner's ownership (PgBouncer may be another user)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    if os.geteuid() == 0:
        owner = path.parent.stat()
        os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, path)
