"""The dev stack's bookkeeping: restart delays, saved ports, whether the servers' user can reach a
directory, and the servers a deleted state directory left behind."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from devstack import state
from devstack.state import Ports, orphaned_servers, reachable_by, server_root, set_aside
from devstack.supervisor import FIRST_DELAY, MAX_DELAY, STABLE_SECONDS, Restarts


def test_restart_delays_grow_and_reset_after_a_stable_run() -> None:
    restarts = Restarts()
    restarts.started["agent"] = 0.0
    waits = [restarts.crashed("agent", float(t)) for t in range(8)]
    assert waits[:3] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY] and waits[-1] == MAX_DELAY
    restarts.started["agent"] = 100.0
    assert restarts.crashed("agent", 100.0 + STABLE_SECONDS) == FIRST_DELAY


def test_ports_are_kept_unless_taken(tmp_path: Path) -> None:
    first = Ports(tmp_path / "ports.json").take("pgbouncer")
    assert Ports(tmp_path / "ports.json").take("pgbouncer") == first
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        holder.listen()
        assert Ports(tmp_path / "ports.json").take("pgbouncer") != first


def test_a_private_parent_is_not_reachable() -> None:
    nobody = pwd.getpwnam("nobody")
    root = Path(tempfile.mkdtemp())  # under /tmp, which everyone may enter
    try:
        root.chmod(0o755)
        private = root / "home"
        (private / "checkout").mkdir(parents=True)
        private.chmod(0o700)
        assert reachable_by(nobody, private / "checkout") == (os.geteuid() == nobody.pw_uid)
        private.chmod(0o711)
        assert reachable_by(nobody, private / "checkout")
    finally:
        shutil.rmtree(root)


def test_servers_a_deleted_state_directory_left_are_set_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(state, "SHARED_ROOT", tmp_path / "shared")
    private = tmp_path / "home"
    checkout_state = private / "pgplane" / ".pgplane"
    checkout_state.mkdir(parents=True)
    private.chmod(0o700)  # as root's home: the servers' user cannot enter, so they live in SHARED_ROOT
    assert orphaned_servers(checkout_state, nobody) is None  # nothing there yet
    servers = server_root(checkout_state, nobody)
    (servers / "postgres").mkdir()
    (servers / "postgres" / "PG_VERSION").write_text("15\n")

    shutil.rmtree(checkout_state)  # the checkout is deleted and cloned again at the same path
    checkout_state.mkdir()
    orphaned = orphaned_servers(checkout_state, nobody)
    assert orphaned == servers
    aside = set_aside(orphaned)
    assert (aside / "postgres" / "PG_VERSION").read_text() == "15\n"
    assert server_root(checkout_state, nobody) == servers and not any(servers.iterdir())
