"""``make run``: the whole platform on one machine, supervised until it is told to stop.

It starts PostgreSQL, NATS, PgBouncer, the API, the agent, the projector and the scheduler under
one state directory, then watches them: a child that exits is restarted with a growing delay
(said on the console, with its log). It stops everything on SIGINT, SIGTERM or SIGHUP, even when
a script started it without job control (where SIGINT arrives ignored), and when its parent
(``make``) goes away. A run killed with SIGKILL leaves its children running: the next run finds
them through ``run.json`` and stops them first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from devstack.cluster import Cluster
from devstack.stack import Stack
from devstack.state import Ports, RunRecord
from entrypoints.cli import OPERATOR_ENV
from infra.settings import Settings

POLL_SECONDS = 0.5
FIRST_DELAY, MAX_DELAY = 1.0, 30.0
STABLE_SECONDS = 60.0
"""A child that ran this long before exiting is restarted at once, as after its first crash."""


@dataclass
class Restarts:
    """When each child may next be restarted, and how long it waits after its next crash."""

    delay: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    def crashed(self, name: str, now: float) -> float:
        if now - self.started.get(name, now) >= STABLE_SECONDS:
            self.delay.pop(name, None)
        wait = self.delay.get(name, FIRST_DELAY)
        self.delay[name] = min(wait * 2, MAX_DELAY)
        self.due[name] = now + wait
        return wait


class Supervisor:
    def __init__(self, cluster: Cluster, stack: Stack, record: RunRecord) -> None:
        self.cluster = cluster
        self.stack = stack
        self.record = record
        self.restarts = Restarts()
        self.stopping = False
        self._parent = os.getppid()

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.cluster.procs | self.stack.procs

    def request_stop(self, signum: int, _: FrameType | None) -> None:
        self.stopping = True

    def watch(self) -> None:
        """Restart what exits, until asked to stop (or until the parent that started us is gone)."""
        now = time.monotonic()
        for name in self.children():
            self.restarts.started[name] = now
        self.record.write({name: proc.pid for name, proc in self.children().items()})
        while not self.stopping and os.getppid() == self._parent:
            time.sleep(POLL_SECONDS)
            self._check(time.monotonic())

    def _check(self, now: float) -> None:
        for name, proc in list(self.children().items()):
            code = proc.poll()
            if code is None:
                continue
            if name not in self.restarts.due:
                wait = self.restarts.crashed(name, now)
                print(
                    f"{name} exited with code {code}; restarting it in {wait:g} s (log: {self._log(name)})", flush=True
                )
            elif now >= self.restarts.due[name] and not self.stopping:
                del self.restarts.due[name]
                self._restart(name)

    def _restart(self, name: str) -> None:
        try:
            if name in self.cluster.procs:
                self.cluster.start_server(name)
            else:
                self.stack.start_process(name)
        except RuntimeError as exc:
            print(f"{name} did not come back: {str(exc).splitlines()[0]}", flush=True)
            self.restarts.crashed(name, time.monotonic())
            return
        self.restarts.started[name] = time.monotonic()
        self.record.write({child: proc.pid for child, proc in self.children().items()})
        print(f"{name} is running again", flush=True)

    def _log(self, name: str) -> Path:
        if name in self.cluster.procs:
            return self.cluster.root / "logs" / f"{name}.log"
        return self.stack.log_path(name)


def run_dev(settings: Settings) -> None:
    """The whole platform on the embedded default, until it is told to stop."""
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)  # secrets, logs and tenants' backups: nobody else's business
    record = RunRecord(state / "run.json")
    record.claim()
    cluster = Cluster(state)
    explicit = settings.api_port if "PGPLANE_API_PORT" in os.environ else None
    api_port = Ports(state / "ports.json").take("api", explicit, default=settings.api_port)
    tracing = {"PGPLANE_TRACE_EXPORTER": settings.trace_exporter}  # the processes trace as pgplane dev was told to
    stack = Stack(cluster, state, api_port=api_port, host_id=settings.host_id, extra_env=tracing)
    supervisor = Supervisor(cluster, stack, record)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, supervisor.request_stop)  # also when inherited as ignored (no job control)
    try:
        cluster.start()
        stack.start()
        stack.write_operator_env(state / OPERATOR_ENV)
        print(
            f"pgplane is up.\n"
            f"  API:         {stack.api_url}/api/v1  (docs: {stack.api_url}/api/docs)\n"
            f"  PgBouncer:   127.0.0.1:{stack.pgbouncer_port}  (tenants connect here)\n"
            f"  admin token: {stack.admin_token}\n"
            f"  state:       {state}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        supervisor.watch()
    finally:
        print("stopping...", flush=True)
        stack.stop()
        cluster.stop()
        record.release()
        print("stopped.", flush=True)
