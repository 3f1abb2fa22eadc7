"""``make run`` as a user meets it, started from a script without a terminal (SIGINT arrives
ignored) in a checkout whose parent directory is private (mode 0700, like /root): a crashed child
comes back, SIGINT and SIGTERM stop everything, a restart keeps the PgBouncer port so a saved URI
still works, a run killed with SIGKILL leaves orphans that the next run stops, and operator
commands find the stack by its state directory and fail fast when it is down."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.state import SHARED_ROOT, server_root
from infra.processes import free_port, service_user

REPO = Path(__file__).resolve().parents[2]


class DevStack:
    """``python -m entrypoints.cli dev`` (what ``make run`` runs) and what it printed."""

    def __init__(self, state: Path, api_port: int) -> None:
        self.state = state
        self.api_port = api_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = state.parent / "console.log"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PGPLANE_")}
        return base | {"PGPLANE_STATE_DIR": str(self.state), "PGPLANE_API_PORT": str(self.api_port)}

    def start(self) -> str:
        """Start it as a script without job control would, and wait until it says it is up."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text("")
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", "dev"],
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
            )
        return self.wait_for("Ctrl-C stops everything", timeout=120)

    def wait_for(self, text: str, *, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in (console := self.output.read_text()):
            assert self.proc is not None and self.proc.poll() is None, console
            assert time.monotonic() < deadline, f"{text!r} never printed:\n{console}"
            time.sleep(0.2)
        return console

    def printed(self, label: str) -> str:
        found = re.search(rf"{label}:\s+(\S+)", self.output.read_text())
        assert found is not None, self.output.read_text()
        return found.group(1)

    def child(self, name: str) -> int:
        assert self.proc is not None
        listing = subprocess.run(
            ["ps", "--ppid", str(self.proc.pid), "-o", "pid=,args="], capture_output=True, text=True
        ).stdout
        return next(int(line.split()[0]) for line in listing.splitlines() if f"entrypoints.cli {name}" in line)

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def pgplane(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGPLANE_")}
        env["PGPLANE_STATE_DIR"] = str(self.state)
        return subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevStack]:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    stack = DevStack(private / "checkout" / ".pgplane", free_port())
    try:
        yield stack
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.stop(signal.SIGTERM)
        shared = server_root(stack.state, service_user()) if stack.state.exists() else None
        if shared is not None and shared.is_relative_to(SHARED_ROOT):
            for servers in [shared, *shared.parent.glob(f"{shared.name}-orphaned-*")]:
                shutil.rmtree(servers, ignore_errors=True)


def new_database(api: str, admin: str) -> str:
    """A project and a database through the API; returns the database's connection URI."""
    with httpx.Client(base_url=api, timeout=30) as http:
        headers = {"Authorization": f"Bearer {admin}"}
        project = http.post("/projects", json={"name": "dev"}, headers=headers).json()
        database = http.post("/databases", json={"project_id": project["id"], "name": "app"}, headers=headers)
        assert database.status_code == 202, database.text
        operation = database.json()["operation"]["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/operations/{operation}", headers=headers).json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        credentials = http.get(f"/databases/{database.json()['database']['id']}/credentials", headers=headers)
        uri: str = credentials.json()["uri"]
        return uri


def query(uri: str) -> None:
    with psycopg.connect(uri, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def ready(api_url: str) -> bool:
    return httpx.get(f"{api_url}/readyz", timeout=5).status_code == 200


def wait_ready(api_url: str) -> None:
    deadline = time.monotonic() + 60
    while not ready(api_url):
        assert time.monotonic() < deadline, httpx.get(f"{api_url}/readyz", timeout=5).text
        time.sleep(0.5)


def test_make_run_supervises_itself(dev: DevStack) -> None:
    dev.start()
    api_url = dev.printed("API").removesuffix("/api/v1")
    bouncer = dev.printed("PgBouncer")
    wait_ready(api_url)
    uri = new_database(f"{api_url}/api/v1", dev.printed("admin token"))
    assert f"@{bouncer}/" in uri
    query(uri)
    assert dev.state.stat().st_mode & 0o777 == 0o700  # secrets, logs and backups are nobody else's
    assert {log.stat().st_mode & 0o777 for log in (dev.state / "logs").iterdir()} == {0o600}

    agent = dev.child("agent")  # a crashed child comes back, and says so
    os.kill(agent, signal.SIGKILL)
    dev.wait_for("agent exited with code -9; restarting it in 1 s")
    dev.wait_for("agent is running again")
    assert dev.child("agent") != agent
    wait_ready(api_url)

    children = [dev.child(name) for name in ("api", "agent", "projector", "scheduler")]
    assert dev.stop(signal.SIGINT) == 0  # SIGINT although it arrived ignored
    assert not any(alive(pid) for pid in children)

    dev.start()  # the same ports: the saved URI works
    assert dev.printed("PgBouncer") == bouncer
    query(uri)
    replayed = dev.pgplane("replay", "projection")  # found through the state directory alone
    assert replayed.returncode == 0, replayed.stderr
    assert '"matches": true' in replayed.stdout

    assert dev.proc is not None
    orphan = dev.child("agent")
    dev.proc.kill()  # SIGKILL: the children live on ...
    dev.proc.wait()
    assert alive(orphan)
    console = dev.start()  # ... until the next run stops them
    assert "stopping what an earlier run left running" in console, console
    assert not alive(orphan)
    query(uri)
    assert dev.stop(signal.SIGTERM) == 0

    started = time.monotonic()
    down = dev.pgplane("replay", "projection")
    assert down.returncode == 2 and "pgplane: cannot reach" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr and time.monotonic() - started < 15

    shutil.rmtree(dev.state)  # the checkout is deleted, and cloned again where it was
    console = dev.start()
    assert "were moved to" in console, console  # the old servers: their passwords went with the state
    query(new_database(f"{api_url}/api/v1", dev.printed("admin token")))
    assert dev.stop(signal.SIGTERM) == 0
