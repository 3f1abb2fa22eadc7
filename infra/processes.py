"""Operating-system process primitives: free ports, child processes in their own session, and
the unprivileged user that PostgreSQL and PgBouncer run as when we are root (both refuse root)."""

from __future__ import annotations

import http.client
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (servers set SO_REUSEADDR: connections of the
    last one still in TIME_WAIT do not stop them)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_until(listening, proc, log, what, f"listen on {port}")


def wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Until ``url`` answers 200: a port that accepts connections may still be something else's
    (another server took it between our choice and our server's bind)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy's answer

    def answering() -> bool:
        try:
            with direct.open(url, timeout=5) as answer:
                return bool(answer.status == HTTPStatus.OK)
        except (OSError, http.client.HTTPException):
            return False

    _wait_until(answering, proc, log, what, f"answer {url}")


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str, doing: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not {doing} within {STARTUP_TIMEOUT}s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


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


def becoming(user: pwd.struct_passwd | None) -> Callable[[], None] | None:
    """A child's ``preexec_fn`` that makes it ``user`` (no supplementary groups) before it runs its
    program; ``None`` for no user. uvloop's subprocesses take no ``user``/``group`` arguments."""
    if user is None:
        return None

    def become() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return become


def owned_dir(path: Path) -> Path:
    """A directory the service user owns (PostgreSQL wants its data dir 0700 and its own)."""
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.rglob("*")]:
        owned_file(p)
    return path


def owned_file(path: Path) -> Path:
    """A file the service user owns (when we run as root: else it is ours already)."""
    user = service_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def spawn(
    args: list[str], log: Path, *, as_service_user: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own session (a Ctrl-C in the terminal reaches only us), logging to ``log``."""
    user = service_user() if as_service_user else None
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:  # the child keeps a copy
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
