"""The shared servers of a dev stack: one PostgreSQL cluster (data host and metadata) and one NATS,
on ports kept in the state directory. PostgreSQL refuses to run as root, so when we are root it
runs as the ``postgres`` user (or ``nobody``), from a directory that user can reach."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nats
import psycopg
from psycopg import sql

from devstack.secrets import load_secrets
from devstack.state import Ports, Process, orphaned_servers, server_root, set_aside, terminate
from infra.bus_permissions import Role
from infra.host_postgres import TENANTS
from infra.pg_tools import pg_bindir
from infra.processes import STARTUP_TIMEOUT, owned_dir, service_user, spawn, stop, tail, wait_for_port
from infra.secrets import scram_verifier

PG_HBA = f"""# written by the pgplane dev stack at every start
local   all  +{TENANTS}  scram-sha-256
host    all  +{TENANTS}  all  reject
local   all  all         scram-sha-256
host    all  all         127.0.0.1/32  scram-sha-256
host    all  all         ::1/128       scram-sha-256
host    replication  all 127.0.0.1/32  scram-sha-256
"""
CONTROL_ROLE = "pgplane_control"
ADMIN_NATS_USER = "admin"
SUPERUSER = "postgres"
MAX_CONNECTIONS = 1200
"""A full host (PGPLANE_HOST_MAX_DATABASES, 1,000) with one idle session per database, one database
at its connection limit, and the platform's own connections, with room to spare."""


@dataclass
class Cluster:
    root: Path
    wal_archive: bool = True
    """PostgreSQL archives finished WAL segments into ``wal_spool`` for point-in-time restore."""
    secrets: dict[str, str] = field(default_factory=dict)
    pg_port: int = 0
    nats_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    nats_users: dict[str, tuple[Role, str]] = field(default_factory=dict)
    """Every NATS user the server knows, with its permissions and password (written 0600)."""

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)
        new_state = not (self.root / "secrets.json").exists()
        self.secrets = load_secrets(self.root / "secrets.json")
        if new_state and (orphaned := orphaned_servers(self.root, service_user())):
            stop_stale_postmaster(orphaned / "postgres")
            print(
                f"the servers of an earlier {self.root} (deleted since, with their passwords) were moved to"
                f" {set_aside(orphaned)}; delete them when you no longer need their data",
                flush=True,
            )
        ports = Ports(self.root / "ports.json")
        self.pg_port = self.pg_port or ports.take("postgres")
        self.nats_port = self.nats_port or ports.take("nats")
        admin = Role(user=ADMIN_NATS_USER, publish=[">"], subscribe=[">"])
        self.nats_users[admin.user] = (admin, self.secrets["nats_admin_password"])
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

    def nats_admin(self) -> dict[str, str]:
        """``nats.connect`` arguments of the cluster's administrator (tests, the dev stack's own setup)."""
        return {"servers": self.nats_url, "user": ADMIN_NATS_USER, "password": self.secrets["nats_admin_password"]}

    @property
    def socket_dir(self) -> Path:
        """PostgreSQL's Unix socket: how PgBouncer reaches it, the only way in for tenant roles."""
        return self.servers / "pg-socket"

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

    def stop(self, *, discard: bool = False) -> None:
        """SIGINT: PostgreSQL's fast shutdown, a checkpoint first. ``discard``: its immediate
        shutdown (SIGQUIT), for a cluster that is deleted next and would only flush pages to be
        thrown away (the test cluster's thousands of databases)."""
        for name in ("nats", "postgres"):
            quit_now = discard and name == "postgres"
            stop(self.procs.pop(name, None), sig=signal.SIGQUIT if quit_now else signal.SIGINT)

    def _start_postgres(self) -> subprocess.Popen[bytes]:
        bindir = pg_bindir()
        data = self.servers / "postgres"
        log = self.root / "logs" / "postgres.log"
        if not (data / "PG_VERSION").exists():
            self._initdb(data, log)
        stop_stale_postmaster(data)
        self._write_pg_hba(data)
        owned_dir(self.socket_dir).chmod(0o700)  # only PostgreSQL's own user (PgBouncer's too) enters
        options = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.socket_dir}",
            f"max_connections={MAX_CONNECTIONS}",
        ]
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
        try:
            wait_for_port(self.pg_port, proc, log, "PostgreSQL")
            self._wait_until_accepting(data)
        except BaseException:
            stop(proc)  # a PostgreSQL we cannot use is not left running
            raise
        return proc

    def _wait_until_accepting(self, data: Path) -> None:
        """Listening is not accepting: wait out recovery and start-up, but not a wrong password."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                psycopg.connect(self.superuser_dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise SystemExit(
                        f"the PostgreSQL in {data} was made with other secrets than {self.root}'s:"
                        " move it away to start afresh"
                    ) from exc
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _write_pg_hba(self, data: Path) -> None:
        """Tenant roles only through the socket (PgBouncer); everyone else by password over TCP too."""
        hba = data / "pg_hba.conf"
        hba.write_text(PG_HBA)
        if user := service_user():
            os.chown(hba, user.pw_uid, user.pw_gid)

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
                "\n# pgplane local stack\nshared_buffers = 128MB\n"
                "password_encryption = 'scram-sha-256'\nwal_level = replica\n"
            )

    def add_nats_users(self, roles: list[Role], passwords: dict[str, str]) -> None:
        """Let these users in with their permissions: the server rereads its configuration (SIGHUP)."""
        self.nats_users |= {role.user: (role, passwords[role.user]) for role in roles}
        self._write_nats_conf()
        proc = self.procs.get("nats")
        if proc is not None:
            proc.send_signal(signal.SIGHUP)
            last = roles[-1]
            wait_until_nats_accepts(self.nats_url, last.user, passwords[last.user])

    def _write_nats_conf(self) -> None:
        store = self.root / "nats"
        store.mkdir(exist_ok=True)
        users = [
            {
                "user": role.user,
                "password": password,
                "permissions": {
                    "publish": {"allow": role.publish},
                    "subscribe": {"allow": role.subscribe},
                    **({"allow_responses": True} if role.answers_requests else {}),
                },
            }
            for role, password in self.nats_users.values()
        ]
        conf = self.root / "nats-local.conf"
        conf.touch(mode=0o600)
        conf.write_text(
            f"listen: 127.0.0.1:{self.nats_port}\nserver_name: pgplane-local\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
            f"authorization {{\n  users = {json.dumps(users, indent=2)}\n}}\n"
        )

    def _start_nats(self) -> subprocess.Popen[bytes]:
        self._write_nats_conf()
        conf = self.root / "nats-local.conf"
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


def wait_until_nats_accepts(url: str, user: str, password: str, *, timeout: float = 10.0) -> None:
    """A reloaded NATS takes a moment to know its new users: try until one can connect."""

    async def refused(_: Exception) -> None:
        pass

    async def attempt() -> None:
        nc = await nats.connect(
            url,
            user=user,
            password=password,
            connect_timeout=1,
            max_reconnect_attempts=1,
            allow_reconnect=False,
            error_cb=refused,  # expected until the reload is done: not printed
        )
        await nc.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            with ThreadPoolExecutor(1) as thread:  # callers may be inside a running event loop
                thread.submit(asyncio.run, attempt()).result()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
