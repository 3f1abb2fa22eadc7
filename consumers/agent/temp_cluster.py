"""A throwaway PostgreSQL cluster for point-in-time recovery, on a private port, in the
operation's work directory: a base backup unpacked, WAL replayed up to the target time, promoted.

It never archives (``archive_mode=off``), listens only on 127.0.0.1, and is found again after an
agent crash through its ``postmaster.pid``, so a retry or a clean-up can always stop it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import AsyncIterable, Collection, Sequence
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from infra.errors import PermanentError
from infra.pg_tools import PgToolError, pg_bindir, run_fed
from infra.processes import free_port, owned_dir, service_user, spawn

WANTED = ".wanted"
END = ".end"
MISSING_PAGE = re.compile(r"page \d+ of relation (\S+) (?:is uninitialized|does not exist)")
"""How PostgreSQL names a page WAL replay could not find (``report_invalid_page``)."""
POLL_SECONDS = 0.05
WAIT_POLLS = 600
"""30 s: for the postmaster to start, or to stop."""


class TempCluster:
    def __init__(self, root: Path, admin_dsn: str) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.wal = root / "wal"
        self.log = root / "postgres.log"
        self._port_file = root / "port"
        self._admin_dsn = admin_dsn
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The host's superuser credentials (the base backup carries them) on the private port."""
        return make_conninfo(self._admin_dsn, host="127.0.0.1", port=self._port_file.read_text().strip())

    async def unpack(self, base_tar_gzs: Sequence[AsyncIterable[bytes]], *, leave_out: Collection[int] = ()) -> None:
        """A fresh data directory from the base backup's archives (whatever a crashed attempt left
        is wiped), with the directories of the databases ``leave_out`` names by OID left empty.

        Like pgBackRest's selective restore, what a restore fetches and writes to disk then grows
        with the one database, not with the host (the caller leaves the other databases' parts in
        the store; a backup stored whole has them filtered out here); ``recover`` lets WAL replay
        pass over the pages it cannot find there, and only there.
        """
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.data, True)
        self.log.unlink(missing_ok=True)
        owned_dir(self.data).chmod(0o700)
        excluded = [f"--exclude=base/{oid}" for oid in sorted(leave_out)]
        tar = ["tar", "-xz", *excluded, "-C", str(self.data)]
        try:
            for archive in base_tar_gzs:
                await run_fed("tar", tar, archive, user=service_user())
        except PgToolError as exc:
            raise PermanentError("the base backup does not unpack", detail=exc) from None
        for oid in leave_out:  # replay may write a left-out database's relation map
            owned_dir(self.data / "base" / str(oid))

    def reset_wal(self) -> None:
        """Recovery will wait for segments again (an earlier attempt may have ended the WAL)."""
        owned_dir(self.wal)
        (self.wal / END).unlink(missing_ok=True)

    def end_wal(self) -> None:
        """No more segments will come: recovery reads none past what is in ``self.wal``."""
        (self.wal / END).touch()

    def wanted(self) -> str:
        """The segment recovery asked for last ('' before it asked)."""
        try:
            return (self.wal / WANTED).read_text().strip()
        except FileNotFoundError:
            return ""

    async def recover(self, target: datetime, *, left_out: Collection[int] = ()) -> None:
        """Replay WAL from ``self.wal`` up to ``target``, then promote; fails loudly if it cannot.

        Segments may arrive while it runs: ``restore_command`` waits for the one PostgreSQL asks
        for (noting its name in ``WANTED``) until it is there, or until ``end_wal`` says no more
        will come. History and backup-label files are never archived here: asked for, they are not.

        With databases ``left_out`` of the unpack, replay skips WAL records whose pages are not
        there (``ignore_invalid_pages``: a page marked all-visible, for one, is logged without its
        image), and PostgreSQL names each such page in its log: one in any other database fails
        the recovery, as it would have without the setting.
        """
        owned_dir(self.wal)
        (self.data / "recovery.signal").touch()
        owned_dir(self.data)
        settings = {
            "restore_command": _restore_command(self.wal),
            "recovery_target_time": target.isoformat(sep=" "),
            "recovery_target_inclusive": "on",
            "recovery_target_action": "promote",
        } | ({"ignore_invalid_pages": "on"} if left_out else {})
        await self.start(settings)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=2) as conn:
                    cur = await conn.execute("SELECT pg_is_in_recovery()")
                    if await cur.fetchone() == (False,):
                        self._check_missing_pages(left_out)
                        return
            except psycopg.OperationalError:
                pass
            if self._proc is not None and self._proc.poll() is not None:
                raise PermanentError("point-in-time recovery failed", detail=self._reason())
            await asyncio.sleep(0.2)

    def _check_missing_pages(self, left_out: Collection[int]) -> None:
        allowed = {f"base/{oid}" for oid in left_out}
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        missing = [path for path in MISSING_PAGE.findall(log) if path.rsplit("/", 1)[0] not in allowed]
        if missing:
            raise PermanentError(
                "the WAL refers to pages missing from the base backup: the database cannot be recovered",
                detail=", ".join(sorted(set(missing))[:20]),
            )

    async def start(self, settings: dict[str, str] | None = None) -> None:
        """Start it (again) unless it runs; after promotion a plain start is enough."""
        if self._running():
            return
        port = free_port()
        self._port_file.write_text(str(port))
        options = {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "archive_mode": "off",
            "fsync": "off",  # thrown away after one copy: durability buys nothing, the start-up sync costs seconds
            "shared_buffers": "64MB",
            "logging_collector": "off",
            "hot_standby": "off",
        } | (settings or {})
        args = [str(pg_bindir() / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        self._proc = spawn(args, self.log, as_service_user=True)
        for _ in range(WAIT_POLLS):
            if self._running() or self._proc.poll() is not None:
                return
            await asyncio.sleep(POLL_SECONDS)

    def _pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _reason(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        noise = "the database system is"  # our own connection attempts while it recovers
        fatal = [line for line in lines if ("FATAL" in line or "PANIC" in line) and noise not in line]
        return (fatal or lines or ["PostgreSQL exited without a message"])[-1]

    async def stop(self) -> None:
        """Immediate shutdown (nothing in it is worth a checkpoint), waited for.

        A restore cancelled while the cluster starts finds no pid file yet: the postmaster this
        object spawned is then waited for until it writes one (by then it has its signal handlers;
        a SIGQUIT sent earlier is lost when the agent was started with it ignored, as a
        background job of a script is) or exits, so it is not left recovering, alone."""
        starting = self._proc if self._proc is not None and self._proc.poll() is None else None
        pid = self._pid()
        for _ in range(WAIT_POLLS):
            if pid is not None or starting is None or starting.poll() is not None:
                break
            await asyncio.sleep(POLL_SECONDS)
            pid = self._pid()
        if pid is None:
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(WAIT_POLLS):
                if not self._running() and (starting is None or starting.poll() is not None):
                    return
                await asyncio.sleep(POLL_SECONDS)

    async def remove(self) -> None:
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.root, True)


def _restore_command(wal: Path) -> str:
    """A shell command for ``restore_command``: the segment ``%f`` once it is in ``wal`` (it gives
    up when the directory is gone: a cluster removed under a recovery that outlived its agent)."""
    script = (
        'case "$1" in *.*) exit 1;; esac; echo "$1" > "$2/' + WANTED + '"; '
        'while [ ! -f "$2/$1" ]; do '
        'if [ -f "$2/' + END + '" ] || [ ! -d "$2" ]; then [ -f "$2/$1" ] || exit 1; break; fi; sleep 0.05; done; '
        'exec cp "$2/$1" "$3"'
    )
    return f"sh -c {shlex.quote(script)} restore %f {shlex.quote(str(wal))} %p"
