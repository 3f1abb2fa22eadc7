"""One platform on a cluster: its own namespace, metadata and ledger databases, PgBouncer, and the
API, agent, projector and scheduler as child processes, each given only the credentials it needs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg

from consumers.agent import ledger_schema
from devstack.cluster import CONTROL_ROLE, Cluster
from devstack.faults import InjectedFaults
from devstack.state import Ports, server_root
from entrypoints.operator import setup_bus
from infra import bus_permissions
from infra.bus_permissions import Role
from infra.metadata import migrate
from infra.pgbouncer import PgBouncer, pgbouncer_ini
from infra.processes import owned_dir, service_user, spawn, stop, tail, wait_for_http, wait_for_port
from infra.secrets import new_password
from infra.settings import Settings
from schemas.subjects import Subjects

PROCESSES = ("projector", "agent", "scheduler", "webhooks", "api")
UNTHROTTLED = {"PGPLANE_REQUESTS_PER_MINUTE_FREE": "1000000", "PGPLANE_REQUESTS_PER_MINUTE_PRO": "1000000"}
"""For platforms that measure throughput or poll in tight loops (benchmarks, tests), not the plans' rates."""


@dataclass
class Stack:
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

    @cached_property
    def servers(self) -> Path:
        """Where PgBouncer's files and the agent's temporary clusters live (the service user reaches them)."""
        return server_root(self.root, service_user())

    @property
    def pgbouncer_dir(self) -> Path:
        return self.servers / "pgbouncer"

    def bouncer(self) -> PgBouncer:
        """This platform's PgBouncer as the agent drives it (its files, its admin console)."""
        return PgBouncer(
            directory=self.pgbouncer_dir,
            port=self.pgbouncer_port,
            admin_password=self.cluster.secrets["pgbouncer_admin_password"],
            server_host=str(self.cluster.socket_dir),  # tenant roles come in only through the socket
            server_port=self.cluster.pg_port,
        )

    @property
    def work_dir(self) -> Path:
        return self.servers / "agent-work"

    def start_servers(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = Ports(self.root / "ports.json")
        self.pgbouncer_port = self.pgbouncer_port or ports.take("pgbouncer")
        self.api_port = ports.take("api", self.api_port or None)
        self.cluster.create_database(self.meta_db, owner=CONTROL_ROLE)
        self.cluster.create_database(self.ledger_db)
        self.cluster.add_nats_users(self.nats_roles(), self.nats_passwords)
        self.migrate()
        self.start_process("pgbouncer")

    def migrate(self) -> None:
        """What ``pgplane migrate metadata ledger bus`` does: each database as its owner, the bus as
        the operator."""
        migrate.upgrade(self.cluster.control_dsn(self.meta_db))

        async def ledger_and_bus() -> None:
            async with await psycopg.AsyncConnection.connect(self.cluster.superuser_dsn(self.ledger_db)) as conn:
                await ledger_schema.migrate(conn)
            await setup_bus(self.settings("operator"))

        with ThreadPoolExecutor(1) as thread:  # callers may be inside a running event loop
            thread.submit(asyncio.run, ledger_and_bus()).result()

    def nats_roles(self) -> list[Role]:
        return bus_permissions.roles(Subjects(namespace=self.namespace), [self.host_id])

    @cached_property
    def nats_passwords(self) -> dict[str, str]:
        """One password per NATS user of this platform, kept (0600) so a restart keeps them."""
        path = self.root / "nats-users.json"
        saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        for role in self.nats_roles():
            saved.setdefault(role.user, new_password())
        path.touch(mode=0o600)
        path.write_text(json.dumps(saved, indent=2))
        return saved

    def nats_user(self, name: str) -> dict[str, str]:
        """``PGPLANE_NATS_USER``/``PASSWORD`` of process ``name`` (the agent's user is per host);
        nothing for the webhook dispatcher, which never touches the bus."""
        if name == "webhooks":
            return {}
        s = Subjects(namespace=self.namespace)
        role = {
            "api": bus_permissions.api(s),
            "scheduler": bus_permissions.scheduler(s),
            "projector": bus_permissions.projector(s),
            "agent": bus_permissions.agent(s, self.host_id),
            "operator": bus_permissions.operator(s),
        }[name]
        return {"PGPLANE_NATS_USER": role.user, "PGPLANE_NATS_PASSWORD": self.nats_passwords[role.user]}

    def nats(self) -> dict[str, str]:
        """``nats.connect`` arguments of this platform's operator (what tests use to look at streams)."""
        user = self.nats_user("operator")
        return {
            "servers": self.cluster.nats_url,
            "user": user["PGPLANE_NATS_USER"],
            "password": user["PGPLANE_NATS_PASSWORD"],
        }

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
            # a newcomer points a webhook at a receiver on this machine
            "PGPLANE_WEBHOOK_ALLOW_LOOPBACK": "true",
            "PGPLANE_WEBHOOK_ALLOW_HTTP": "true",
        }
        backups = {"PGPLANE_OBJECT_STORE_URL": self.object_store_url or (self.root / "backups").resolve().as_uri()}
        own = {
            "operator": {
                "PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db),
                "PGPLANE_LEDGER_DSN": c.superuser_dsn(self.ledger_db),
                "PGPLANE_COMMAND_SIGNING_KEY": s["command_signing_key"],  # redrive, retry, fail
            },
            "api": {
                "PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db),
                "PGPLANE_SECRET_KEY": s["secret_key"],
                "PGPLANE_ADMIN_TOKEN": s["admin_token"],
                "PGPLANE_API_PORT": str(self.api_port),
                "PGPLANE_COMMAND_SIGNING_KEY": s["command_signing_key"],
            }
            | backups,
            "projector": {"PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db)},
            "webhooks": {"PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db), "PGPLANE_SECRET_KEY": s["secret_key"]},
            "scheduler": {
                "PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db),
                "PGPLANE_COMMAND_SIGNING_KEY": s["command_signing_key"],
            },
            "agent": {
                "PGPLANE_HOST_ADMIN_DSN": c.superuser_dsn(),
                "PGPLANE_LEDGER_DSN": c.superuser_dsn(self.ledger_db),
                "PGPLANE_PGBOUNCER_DIR": str(self.pgbouncer_dir),
                "PGPLANE_PGBOUNCER_ADMIN_PASSWORD": s["pgbouncer_admin_password"],
                "PGPLANE_HOST_PG_HOST": str(c.socket_dir),
                "PGPLANE_HOST_PG_PORT": str(c.pg_port),
                "PGPLANE_HOST_PRIVATE_KEY": s["host_private_key"],
                "PGPLANE_AGENT_WORK_DIR": str(self.work_dir),
                "PGPLANE_COMMAND_VERIFY_KEYS": s["command_verify_keys"],
            }
            | ({"PGPLANE_WAL_SPOOL_DIR": str(c.wal_spool)} if c.wal_archive else {})
            | backups
            | {"PGPLANE_BACKUP_KEYS": s["backup_keys"]},  # the master keys live only where the data is
        }[name]
        base = {k: v for k, v in os.environ.items() if not k.startswith("PGPLANE_")}
        return base | common | own | self.nats_user(name) | self.extra_env | (overrides or {})

    def write_operator_env(self, path: Path) -> None:
        """What operator commands (``pgplane migrate``, ``pgplane replay``) need to find this platform."""
        c = self.cluster
        env = {
            "PGPLANE_NAMESPACE": self.namespace,
            "PGPLANE_NATS_URL": c.nats_url,
            "PGPLANE_HOST_ID": self.host_id,
            "PGPLANE_METADATA_DSN": c.control_dsn(self.meta_db),
            "PGPLANE_LEDGER_DSN": c.superuser_dsn(self.ledger_db),
            "PGPLANE_COMMAND_SIGNING_KEY": self.cluster.secrets["command_signing_key"],
        } | self.nats_user("operator")
        path.touch(mode=0o600)
        path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))

    def settings(self, name: str) -> Settings:
        """The settings process ``name`` runs with."""
        env = self.env(name)
        return Settings.model_validate(
            {k.removeprefix("PGPLANE_").lower(): v for k, v in env.items() if k.startswith("PGPLANE_")}
        )

    def start_process(
        self, name: str, overrides: dict[str, str] | None = None, *, faults: InjectedFaults | None = None
    ) -> subprocess.Popen[bytes]:
        """Start PgBouncer or one platform process (again, after a crash: on the same port); with
        ``faults`` a platform process runs under the fault-injecting launcher."""
        log = self.log_path(name)
        if name == "pgbouncer":
            proc = self._start_pgbouncer(log)
        else:
            launcher = "devstack.faults" if faults else "entrypoints.cli"
            env = self.env(name, overrides) | (faults.env() if faults else {})
            proc = spawn([sys.executable, "-m", launcher, name], log, env=env)
            if name == "api":
                wait_for_http(f"{self.api_url}/healthz", proc, log, "the API")
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.cluster.root / "logs" / f"{self.namespace}-{name}.log"

    def log_tail(self, name: str) -> str:
        return tail(self.log_path(name))

    def stop_process(self, name: str, *, sig: int = signal.SIGTERM) -> None:
        stop(self.procs.pop(name, None), sig=sig)

    def stop(self) -> None:
        """The platform processes all at once, then PgBouncer."""
        running = [self.procs.pop(name) for name in PROCESSES if name in self.procs]
        for proc in running:
            if proc.poll() is None:
                proc.terminate()
        for proc in running:
            stop(proc)
        self.stop_process("pgbouncer")

    def _start_pgbouncer(self, log: Path) -> subprocess.Popen[bytes]:
        directory = owned_dir(self.pgbouncer_dir)
        (directory / "pgbouncer.ini").write_text(pgbouncer_ini(port=self.pgbouncer_port, directory=directory))
        if not (directory / "databases.ini").exists():
            self.bouncer().write_files([])  # the agent rewrites both files from its ledger when it starts
        owned_dir(directory)
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        proc = spawn([binary, str(directory / "pgbouncer.ini")], log, as_service_user=True)
        wait_for_port(self.pgbouncer_port, proc, log, "PgBouncer")
        return proc
