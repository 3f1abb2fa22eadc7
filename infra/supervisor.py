"""The local supervisor: starts real NATS, PostgreSQL and PgBouncer on free ports under one
state directory, then the API, the agent and the projector as child processes.

``make run`` and the test fixtures both use it. PostgreSQL and PgBouncer refuse to run as
root, so when we are root they run as the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from infra.backup_crypto import new_backup_key_spec
from infra.pg_tools import pg_bindir
from infra.pgbouncer import PgBouncer, pgbouncer_ini
from infra.secrets import new_host_key, new_password, new_secret_key, scram_verifier

CONTROL_ROLE = "pgplane_control"
SUPERUSER = "postgres"
STARTUP_TIMEOUT = 60.0
PROCESSES = ("projector", "agent", "scheduler", "api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {STARTUP_TIMEOUT}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else "(no log)"


def service_user() -> pwd.struct_passwd | None:
    """The unprivileged user servers run as when we are root; ``None`` when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root needs a 'postgres' or 'nobody' user to run PostgreSQL as")


def owned_dir(path: Path) -> Path:
    """A directory the service user owns (PostgreSQL wants its data dir 0700 and its own)."""
    path.mkdir(parents=True, exist_ok=True)
    user = service_user()
    if user is not None:
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)
    return path


def spawn(
    args: list[str], log: Path, *, as_service_user: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    user = service_user() if as_service_user else None
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
        )


def stop(proc: subprocess.Popen[bytes] | None, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        self.secrets = _load_secrets(self.root / "secrets.json")
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
                raise RuntimeError(f"initdb failed:\n{_tail(log)}")
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
        self._start_pgbouncer()

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

    def start_process(self, name: str, overrides: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if name == "api" and not self.api_port:
            self.api_port = free_port()
        log = self.log_path(name)
        proc = spawn([sys.executable, "-m", "infra.cli", name], log, env=self.env(name, overrides))
        self.procs[name] = proc
        if name == "api":
            wait_for_port(self.api_port, proc, log, "the API")
        return proc

    def log_path(self, name: str) -> Path:
        return self.cluster.root / "logs" / f"{self.namespace}-{name}.log"

    def log_tail(self, name: str) -> str:
        return _tail(self.log_path(name))

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


def _load_secrets(path: Path) -> dict[str, str]:
    """Generated once per state directory and reused, so a restart keeps every credential."""
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
    else:
        private, public = new_host_key()
        saved = {
            "superuser_password": new_password(),
            "control_password": new_password(),
            "pgbouncer_admin_password": new_password(),
            "secret_key": new_secret_key(),
            "host_private_key": private,
            "host_public_key": public,
            "admin_token": "pgpadmin_" + new_password(40),
        }
    if "backup_keys" not in saved:  # state made before backups existed
        saved["backup_keys"] = new_backup_key_spec("k1")
    path.touch(mode=0o600)
    path.write_text(json.dumps(saved, indent=2))
    if token := os.environ.get("PGPLANE_ADMIN_TOKEN"):
        saved["admin_token"] = token
    return saved
