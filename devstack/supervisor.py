"""The local supervisor: starts real NATS, PostgreSQL and PgBouncer on free ports under one
state directory, then the API, the agent and the projector as child processes.

``make run`` and the test fixtures both use it. PostgreSQL and PgBouncer refuse to run as
root, so when we are root they run as the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from consumers.agent import ledger_schema
from devstack.faults import InjectedFaults
from devstack.secrets import load_secrets
from infra.metadata import migrate
from infra.pg_tools import pg_bindir
from infra.pgbouncer import PgBouncer, pgbouncer_ini
from infra.processes import (
    STARTUP_TIMEOUT,
    free_port,
    owned_dir,
    port_is_free,
    service_user,
    spawn,
    stop,
    tail,
    wait_for_port,
)
from infra.secrets import scram_verifier
from infra.settings import Settings

CONTROL_ROLE = "pgplane_control"
SUPERUSER = "postgres"
PROCESSES = ("projector", "agent", "scheduler", "api")


@dataclass
class Cluster:
    """The shared servers: one PostgreSQL cluster (data host + metadata) and one NATS."""

    root: Path
    wal_archive: bool = True
    """PostgreSQL archives finished WAL segments into ``wal_spool`` for point-in-time restore."""
    secrets: dict[str, str] = field(default_factory=dict)
    pg_port: int = 0
    nats_port: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "logs").mkdir(exist_ok=True)
        self.secrets = load_secrets(self.root / "secrets.json")
        self._start_postgres()
        self._start_nats()
        self._bootstrap()

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def wal_spool(self) -> Path:
        return self.root / "wal-spool"

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.secrets['superuser_password']}@127.0.0.1:{self.pg_port}/{dbname}"

    def control_dsn(self, dbname: str) -> str:
        return f"postgresql://{CONTROL_ROLE}:{self.secrets['control_password']}@127.0.0.1:{self.pg_port}/{dbname}"

    def create_database(self, name: str, *, owner: str = SUPERUSER) -> None:
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop(proc, sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        self._procs.clear()

    def _start_postgres(self) -> None:
        bindir = pg_bindir()
        data = self.root / "postgres"
        log = self.root / "logs" / "postgres.log"
        if not (data / "PG_VERSION").exists():
            owned_dir(data).chmod(0o700)
            pwfile = self.root / "postgres.pw"
            pwfile.write_text(self.secrets["superuser_password"] + "\n")
            user = service_user()
            if user:
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            init = spawn(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                log,
                as_service_user=True,
            )
            if init.wait() != 0:
                raise RuntimeError(f"initdb failed:\n{tail(log)}")
            pwfile.unlink()
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# pgplane local stack\nmax_connections = 400\nshared_buffers = 128MB\n"
                    "password_encryption = 'scram-sha-256'\nwal_level = replica\n"
                )
        self.pg_port = free_port()
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
        self._procs.append(proc)
        wait_for_port(self.pg_port, proc, log, "PostgreSQL")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # listening is not accepting: wait out recovery/start-up
            try:
                psycopg.connect(self.superuser_dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _start_nats(self) -> None:
        store = self.root / "nats"
        store.mkdir(exist_ok=True)
        self.nats_port = free_port()
        conf = self.root / "nats-local.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.nats_port}\nserver_name: pgplane-local\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
        )
        binary = Path(sys.executable).parent / "nats-server"
        log = self.root / "logs" / "nats.log"
        proc = spawn([str(binary if binary.exists() else "nats-server"), "-c", str(conf)], log)
        self._procs.append(proc)
        wait_for_port(self.nats_port, proc, log, "NATS")

    def _bootstrap(self) -> None:
        verifier = scram_verifier(self.secrets["control_password"])
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CONTROL_ROLE,)).fetchone()
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(CONTROL_ROLE), sql.Literal(verifier)
                )
            )


@dataclass
class Stack:
    """One platform on a cluster: its own namespace, metadata and ledger databases, PgBouncer,
    API, agent and projector. Each process gets only the credentials it needs."""

    cluster: Cluster
    root: Path
    namespace: str = "pgplane"
    meta_db: str = "pgplane_meta"
    ledger_db: str = "pgplane_agent"
    api_port: int = 0
    host_id: str = "host-1"
    extra_env: dict[str, str] = field(default_factory=dict)
    object_store_url: str = ""
    processes: tuple[str, ...] = PROCESSES
    """Which platform processes ``start`` runs (a test that schedules nothing leaves the scheduler out)."""
    pgbouncer_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin_token(self) -> str:
        return self.cluster.secrets["admin_token"]

    @property
    def pgbouncer_dir(self) -> Path:
        return self.root / "pgbouncer"

    def start_servers(self) -> None:
        self.cluster.create_database(self.meta_db, owner=CONTROL_ROLE)
        self.cluster.create_database(self.ledger_db)
        self.migrate()
        self._start_pgbouncer()

    def migrate(self) -> None:
        """What ``pgplane migrate metadata ledger`` does, as each database's owner."""
        migrate.upgrade(self.cluster.control_dsn(self.meta_db))

        async def ledger() -> None:
            async with await psycopg.AsyncConnection.connect(self.cluster.superuser_dsn(self.ledger_db)) as conn:
                await ledger_schema.migrate(conn)

        with ThreadPoolExecutor(1) as thread:  # callers may be inside a running event loop
            thread.submit(asyncio.run, ledger()).result()

    def start(self) -> None:
        self.start_servers()
        for name in self.processes:
            self.start_process(name)

    def env(self, name: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
        s, c = self.cluster.secrets, self.cluster
        common = {
            "PGPLANE_NAMESPACE": self.namespace,
            "PGPLANE_NATS_URL": c.nats_url,
            "PGPLANE_HOST_ID": self.host_id,
            "PGPLANE_PGBOUNCER_PORT": str(self.pgbouncer_port),
            "PGPLANE_HOST_PUBLIC_KEY": s["host_public_key"],
        }
        backups = {
            "PGPLANE_OBJECT_STORE_URL": self.object_store_url or (self.root / "backups").resolve().as_uri(),
            "PGPLANE_BACKUP_KEYS": s["backup_keys"],
        }
        own = {
            "api": {
                "PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db),
                "PGPLANE_SECRET_KEY": s["secret_key"],
                "PGPLANE_ADMIN_TOKEN": s["admin_token"],
                "PGPLANE_API_PORT": str(self.api_port),
            }
            | backups,
            "projector": {"PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db)},
            "scheduler": {"PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db)},
            "agent": {
                "PGPLANE_HOST_ADMIN_DSN": c.superuser_dsn(),
                "PGPLANE_LEDGER_DSN": c.superuser_dsn(self.ledger_db),
                "PGPLANE_PGBOUNCER_DIR": str(self.pgbouncer_dir),
                "PGPLANE_PGBOUNCER_ADMIN_PASSWORD": s["pgbouncer_admin_password"],
                "PGPLANE_HOST_PG_PORT": str(c.pg_port),
                "PGPLANE_HOST_PRIVATE_KEY": s["host_private_key"],
                "PGPLANE_AGENT_WORK_DIR": str(self.root / "agent-work"),
            }
            | ({"PGPLANE_WAL_SPOOL_DIR": str(c.wal_spool)} if c.wal_archive else {})
            | backups,
        }[name]
        base = {k: v for k, v in os.environ.items() if not k.startswith("PGPLANE_")}
        return base | common | own | self.extra_env | (overrides or {})

    def start_process(
        self, name: str, overrides: dict[str, str] | None = None, *, faults: InjectedFaults | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one platform process; with ``faults`` it runs under the fault-injecting launcher."""
        if name == "api" and not self.api_port:
            self.api_port = free_port()
        log = self.log_path(name)
        launcher = "devstack.faults" if faults else "entrypoints.cli"
        env = self.env(name, overrides) | (faults.env() if faults else {})
        proc = spawn([sys.executable, "-m", launcher, name], log, env=env)
        self.procs[name] = proc
        if name == "api":
            wait_for_port(self.api_port, proc, log, "the API")
        return proc

    def log_path(self, name: str) -> Path:
        return self.cluster.root / "logs" / f"{self.namespace}-{name}.log"

    def log_tail(self, name: str) -> str:
        return tail(self.log_path(name))

    def stop_process(self, name: str, *, sig: int = signal.SIGTERM) -> None:
        stop(self.procs.pop(name, None), sig=sig)

    def stop(self) -> None:
        for name in (*reversed(PROCESSES), "pgbouncer"):
            self.stop_process(name)

    def _start_pgbouncer(self) -> None:
        directory = owned_dir(self.pgbouncer_dir)
        self.pgbouncer_port = self.pgbouncer_port or free_port()
        (directory / "pgbouncer.ini").write_text(pgbouncer_ini(port=self.pgbouncer_port, directory=directory))
        bouncer = PgBouncer(
            directory=directory,
            port=self.pgbouncer_port,
            admin_password=self.cluster.secrets["pgbouncer_admin_password"],
            server_host="127.0.0.1",
            server_port=self.cluster.pg_port,
        )
        if not (directory / "databases.ini").exists():
            bouncer.write_files([])  # the agent rewrites both files from its ledger when it starts
        owned_dir(directory)
        log = self.cluster.root / "logs" / f"{self.namespace}-pgbouncer.log"
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        proc = spawn([binary, str(directory / "pgbouncer.ini")], log, as_service_user=True)
        self.procs["pgbouncer"] = proc
        wait_for_port(self.pgbouncer_port, proc, log, "PgBouncer")


def run_dev(settings: Settings) -> None:
    """The whole platform on the embedded default, until Ctrl-C."""
    state = settings.state_dir.resolve()
    cluster = Cluster(state)
    port = settings.api_port
    if "PGPLANE_API_PORT" not in os.environ and not port_is_free(port):
        port = free_port()
    stack = Stack(cluster, state, api_port=port, host_id=settings.host_id)
    try:
        cluster.start()
        stack.start()
        print(f"pgplane is up.\n  API:         {stack.api_url}/api/v1  (docs: {stack.api_url}/api/docs)")
        print(f"  admin token: {stack.admin_token}\n  state:       {state}\nCtrl-C stops everything.", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        stack.stop()
        cluster.stop()
