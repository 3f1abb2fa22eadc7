"""The shared servers of a dev stack: one PostgreSQL cluster (data host and metadata) and one NATS,
on ports kept in the state directory. PostgreSQL refuses to run as root, so when we are root it
runs as the ``postgres`` user (or ``nobody``), from a directory that user can reach."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.secrets import load_secrets
from devstack.state import Ports, Process, server_root, terminate
from infra.pg_tools import pg_bindir
from infra.processes import STARTUP_TIMEOUT, owned_dir, service_user, spawn, stop, tail, wait_for_port
from infra.secrets import scram_verifier

CONTROL_ROLE = "pgplane_control"
SUPERUSER = "postgres"


@dataclass
class Cluster:
    root: Path
    wal_archive: bool = True
    """PostgreSQL archives finished WAL segments into ``wal_spool`` for point-in-time restore."""
    secrets: dict[str, str] = field(default_factory=dict)
    pg_port: int = 0
    nats_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "logs").mkdir(exist_ok=True)
        self.secrets = load_secrets(self.root / "secrets.json")
        ports = Ports(self.root / "ports.json")
        self.pg_port = self.pg_port or ports.take("postgres")
        self.nats_port = self.nats_port or ports.take("nats")
        self.start_server("postgres")
        self.start_server("nats")
        self._bootstrap()

    @cached_property
    def servers(self) -> Path:
        """Where PostgreSQL's files live (see ``devstack.state.server_root``)."""
        return server_root(self.root, service_user())

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def wal_spool(self) -> Path:
        return self.servers / "wal-spool"

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.secrets['superuser_password']}@127.0.0.1:{self.pg_port}/{dbname}"

    def control_dsn(self, dbname: str) -> str:
        return f"postgresql://{CONTROL_ROLE}:{self.secrets['control_password']}@127.0.0.1:{self.pg_port}/{dbname}"

    def create_database(self, name: str, *, owner: str = SUPERUSER) -> None:
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))

    def start_server(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``postgres`` or ``nats`` (again, after a crash: on the same port)."""
        proc = self._start_postgres() if name == "postgres" else self._start_nats()
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for name in ("nats", "postgres"):
            stop(self.procs.pop(name, None), sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown

    def _start_postgres(self) -> subprocess.Popen[bytes]:
        bindir = pg_bindir()
        data = self.servers / "postgres"
        log = self.root / "logs" / "postgres.log"
        if not (data / "PG_VERSION").exists():
            self._initdb(data, log)
        stop_stale_postmaster(data)
        options = ["listen_addresses=127.0.0.1", "unix_socket_directories="]
        if self.wal_archive:
            owned_dir(self.wal_spool)
            options += [
                "archive_mode=on",
                "archive_library=basic_archive",
                f"basic_archive.archive_directory={self.wal_spool}",
                "archive_timeout=60",
            ]
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(self.pg_port)]
        for option in options:
            args += ["-c", option]
        proc = spawn(args, log, as_service_user=True)
        wait_for_port(self.pg_port, proc, log, "PostgreSQL")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # listening is not accepting: wait out recovery/start-up
            try:
                psycopg.connect(self.superuser_dsn(), connect_timeout=2).close()
                return proc
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _initdb(self, data: Path, log: Path) -> None:
        owned_dir(data).chmod(0o700)
        pwfile = data.parent / "postgres.pw"
        pwfile.write_text(self.secrets["superuser_password"] + "\n")
        owned_dir(pwfile.parent)
        initdb = [str(pg_bindir() / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}"]
        init = spawn([*initdb, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], log, as_service_user=True)
        code = init.wait()
        pwfile.unlink()
        if code != 0:
            raise RuntimeError(f"initdb failed:\n{tail(log)}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# pgplane local stack\nmax_connections = 400\nshared_buffers = 128MB\n"
                "password_encryption = 'scram-sha-256'\nwal_level = replica\n"
            )

    def _start_nats(self) -> subprocess.Popen[bytes]:
        store = self.root / "nats"
        store.mkdir(exist_ok=True)
        conf = self.root / "nats-local.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.nats_port}\nserver_name: pgplane-local\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
        )
        binary = Path(sys.executable).parent / "nats-server"
        log = self.root / "logs" / "nats.log"
        proc = spawn([str(binary if binary.exists() else "nats-server"), "-c", str(conf)], log)
        wait_for_port(self.nats_port, proc, log, "NATS")
        return proc

    def _bootstrap(self) -> None:
        verifier = scram_verifier(self.secrets["control_password"])
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CONTROL_ROLE,)).fetchone()
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(CONTROL_ROLE), sql.Literal(verifier)
                )
            )


def stop_stale_postmaster(data: Path) -> None:
    """A PostgreSQL still running on ``data`` (left by a run that was killed) is stopped first, instead
    of the new one refusing to start over its ``postmaster.pid``."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return  # no lock file, or its process is gone: PostgreSQL clears a stale one itself
    if str(data).encode() not in command:
        return
    process = Process.of("postgres", pid)
    if process is not None:
        print(f"stopping the PostgreSQL an earlier run left on {data} (pid {pid})", flush=True)
        terminate([process])
