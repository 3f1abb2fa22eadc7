"""PostgreSQL's own client tools (``pg_dump``, ``pg_restore``) as streaming subprocesses.

The password never appears on a command line (it would show in ``ps``): it travels in the
child's environment as ``PGPASSWORD``. Output and input are streamed in pieces, so memory
stays flat whatever the database size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.processes import becoming

READ_SIZE = 256 * 1024
STDERR_LIMIT = 4000


class PgToolError(Exception):
    """A client tool exited with an error; the message ends with the tail of its stderr."""


def pg_bindir() -> Path:
    """PostgreSQL binaries: ``PGPLANE_PG_BINDIR``, else the newest Debian install, else PATH."""
    if configured := os.environ.get("PGPLANE_PG_BINDIR"):
        return Path(configured)
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if installed:
        return installed[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (or set PGPLANE_PG_BINDIR)")


def tool_args(dsn: str, dbname: str) -> tuple[str, dict[str, str]]:
    """A conninfo for ``dbname`` without the password, and the environment that carries it."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    params["dbname"] = dbname
    env = dict(os.environ) | ({"PGPASSWORD": str(password)} if password is not None else {})
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), env


async def _collect(stream: asyncio.StreamReader | None) -> bytes:
    """Keep only the tail of stderr: enough for an error message, never unbounded."""
    tail = b""
    while stream is not None and (piece := await stream.read(READ_SIZE)):
        tail = (tail + piece)[-STDERR_LIMIT:]
    return tail


async def _finish(proc: asyncio.subprocess.Process, stderr: asyncio.Task[bytes], what: str) -> None:
    code = await proc.wait()
    message = (await stderr).decode(errors="replace").strip()
    if code != 0:
        raise PgToolError(f"{what} exited with {code}: {message[-1000:]}")


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class ToolOutput:
    """A running tool's stdout as a stream of pieces, which raises at its end if the tool failed."""

    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self._proc = proc
        self._what = what
        self._stderr = asyncio.create_task(_collect(proc.stderr))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._proc.stdout is not None
        while piece := await self._proc.stdout.read(READ_SIZE):
            yield piece
        await _finish(self._proc, self._stderr, self._what)

    async def close(self) -> None:
        """Kill the tool if it still runs, and collect its exit.

        What it wrote and nobody read is drained first. A reader that stopped early (a backup
        over its limit) may have left the stream's buffer full, which pauses the pipe; and
        asyncio's ``wait()`` returns only once every pipe has reached its end, so without the
        drain it would wait forever for a process that is already gone.
        """
        _kill(self._proc)
        assert self._proc.stdout is not None
        while await self._proc.stdout.read(READ_SIZE):
            pass
        await self._proc.wait()
        self._stderr.cancel()


@contextlib.asynccontextmanager
async def _streamed(what: str, args: list[str], env: dict[str, str]) -> AsyncIterator[ToolOutput]:
    proc = await asyncio.create_subprocess_exec(
        str(pg_bindir() / what),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    output = ToolOutput(proc, what)
    try:
        yield output
    finally:
        await output.close()


@contextlib.asynccontextmanager
async def pg_dump(dsn: str, dbname: str, *, compression: int | None = None) -> AsyncIterator[ToolOutput]:
    """``pg_dump -Fc`` of one database as a byte stream (``compression``: its zlib level, 0-9);
    leaving the block early kills it.

    The stream raises ``PgToolError`` at its end when pg_dump failed, so a truncated dump can
    never pass for a complete one.
    """
    conninfo, env = tool_args(dsn, dbname)
    level = [] if compression is None else [f"--compress={compression}"]
    async with _streamed("pg_dump", ["--format=custom", *level, f"--dbname={conninfo}"], env) as output:
        yield output


@contextlib.asynccontextmanager
async def pg_basebackup(dsn: str) -> AsyncIterator[ToolOutput]:
    """A tar of the whole cluster (``pg_basebackup -Ft -X none``) as a byte stream, uncompressed
    so that it can be split by database on its way out.

    Its WAL is not included: archiving delivers it.
    """
    conninfo, env = tool_args(dsn, "postgres")
    args = ["--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=fast", "--no-manifest"]
    async with _streamed("pg_basebackup", [*args, f"--dbname={conninfo}"], env) as output:
        yield output


async def run_fed(
    what: str,
    args: list[str],
    chunks: AsyncIterable[bytes],
    *,
    env: dict[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
) -> None:
    """Run ``args`` with ``chunks`` on its stdin; ``PgToolError`` (with its stderr) if it fails.

    Leaving early (an error in ``chunks``, a cancellation) kills it.
    """
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=becoming(user),
    )
    stderr = asyncio.create_task(_collect(proc.stderr))
    assert proc.stdin is not None
    try:
        async for piece in chunks:
            proc.stdin.write(piece)
            await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it stopped reading: its exit code and stderr say why
    except BaseException:
        _kill(proc)
        await proc.wait()
        stderr.cancel()
        raise
    await _finish(proc, stderr, what)


async def pg_restore(dsn: str, dbname: str, dump: AsyncIterable[bytes], *, role: str | None) -> None:
    """Feed a custom-format dump to ``pg_restore`` into ``dbname``, stopping at the first error.

    Ownership and grants of the source are dropped; with ``role`` every object is created by
    (so owned by) that role, as if the tenant had created it.
    """
    conninfo, env = tool_args(dsn, dbname)
    options = ["--no-owner", "--no-acl", "--exit-on-error", *([f"--role={role}"] if role else [])]
    await run_fed("pg_restore", [str(pg_bindir() / "pg_restore"), *options, f"--dbname={conninfo}"], dump, env=env)
