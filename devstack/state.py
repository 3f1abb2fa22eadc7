"""What the dev stack keeps in its state directory between runs: the ports it listens on, the
processes it started (so a later run can stop what a killed one left behind), and where the
servers' own files live when the state directory is private to root."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import signal
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from infra.processes import free_port, port_is_free

SHARED_ROOT = Path("/var/lib/pgplane")


class Ports:
    """Ports by name, saved in ``ports.json``: a restart listens where the last run did, so saved
    connection URIs keep working; a port something else took meanwhile is replaced (and said so)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}

    def take(self, name: str, wanted: int | None = None, *, default: int | None = None) -> int:
        """``wanted`` if given, else the saved port, else ``default`` if free, else any free port."""
        port = wanted or self._saved.get(name)
        if port is not None and not port_is_free(port):
            print(f"port {port} of {name} is taken by something else: {name} moves", flush=True)
            port = None
        if port is None:
            port = default if default is not None and port_is_free(default) else free_port()
        self._saved[name] = port
        self.path.write_text(json.dumps(self._saved, indent=2) + "\n")
        return port


def reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` can reach ``path`` (search permission on it and every directory above)."""
    for directory in [path, *path.parents]:
        if not directory.exists():
            continue
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def server_root(state: Path, user: pwd.struct_passwd | None) -> Path:
    """Where files the servers' unprivileged user must reach live: the state directory itself, or
    when it sits in a directory that user cannot enter (root's home is 0700) a directory of its own
    under ``/var/lib/pgplane``, named after the state directory so each checkout keeps its own."""
    root = _shared_root(state, user)
    if root is None:
        return state
    root.mkdir(parents=True, exist_ok=True)
    for directory in (SHARED_ROOT, root):
        directory.chmod(0o755)
    (state / "servers").unlink(missing_ok=True)
    (state / "servers").symlink_to(root)  # so a user looking at the state directory finds them
    return root


def orphaned_servers(state: Path, user: pwd.struct_passwd | None) -> Path | None:
    """Call with a state directory just made. When an earlier one at the same path was deleted (a
    checkout removed and cloned again), its servers are still under ``/var/lib/pgplane``, and their
    passwords went with it: returns their directory, to be set aside (``set_aside``)."""
    root = _shared_root(state, user)  # None: they lived inside the state directory, deleted with it
    return root if root is not None and root.is_dir() and any(root.iterdir()) else None


def set_aside(servers: Path) -> Path:
    """Move servers nobody can log in to out of the way, never deleting them (their databases may
    hold data); returns where they went."""
    aside = servers.with_name(f"{servers.name}-orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
    servers.rename(aside)
    return aside


def _shared_root(state: Path, user: pwd.struct_passwd | None) -> Path | None:
    """The servers' directory under ``SHARED_ROOT``; ``None`` when they live in the state directory."""
    if user is None or reachable_by(user, state):
        return None
    return SHARED_ROOT / hashlib.sha256(str(state).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Process:
    """A process we started, recognised later by its pid and its start time (pids are reused)."""

    name: str
    pid: int
    started: int

    @classmethod
    def of(cls, name: str, pid: int) -> Process | None:
        started = _start_time(pid)
        return None if started is None else cls(name, pid, started)

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def _start_time(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[19])  # field 22 of stat(5), counted after the command name


class RunRecord:
    """``run.json``: the supervisor and the processes it started, while it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> list[Process]:
        try:
            return [Process(**entry) for entry in json.loads(self.path.read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def claim(self) -> None:
        """Refuse when another supervisor runs on this state; stop what a killed one left behind."""
        recorded = self._read()
        supervisor = next((p for p in recorded if p.name == "supervisor"), None)
        if supervisor is not None and supervisor.alive():
            raise SystemExit(
                f"pgplane is already running on {self.path.parent} (pid {supervisor.pid}); stop it with"
                f" `kill {supervisor.pid}` or use another PGPLANE_STATE_DIR"
            )
        leftovers = [p for p in recorded if p.name != "supervisor" and p.alive()]
        if leftovers:
            names = ", ".join(p.name for p in leftovers)
            print(f"stopping what an earlier run left running: {names}", flush=True)
            terminate(leftovers)
        self.write({})

    def write(self, children: dict[str, int]) -> None:
        entries = [Process.of("supervisor", os.getpid())] + [Process.of(n, pid) for n, pid in children.items()]
        self.path.write_text(json.dumps([vars(p) for p in entries if p is not None], indent=2) + "\n")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def terminate(processes: list[Process], *, timeout: float = 20.0) -> None:
    """SIGTERM (PostgreSQL: SIGINT, its fast shutdown) to all at once, then SIGKILL to what remains."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT if process.name == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in processes:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def scratch_root(prefix: str) -> Path:
    """A throwaway directory for a cluster (tests, benchmarks) that the servers' user can enter."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root
