"""A tool fed on its stdin runs as the service user when we are root, under the event loop every
process runs on (uvloop, whose subprocesses take no ``user``/``group`` arguments)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import pytest
import uvloop

from infra.pg_tools import PgToolError, run_fed
from infra.processes import service_user

CHECK = 'cat >/dev/null; test "$(id -u):$(id -g):$(id -G)" = "$0" || exit 3'
"""Reads its stdin, then exits 3 unless its user, group and groups are what it was given."""


async def fed() -> AsyncIterator[bytes]:
    yield b"a dump"


def run_checking(expected: str) -> None:
    user = service_user()
    uvloop.run(run_fed("sh", ["/bin/sh", "-c", CHECK, expected], fed(), user=user))


def who_runs_it() -> str:
    """Root: the service user with its own group only. Otherwise: we, as we are."""
    user = service_user()
    if user is None:
        groups = subprocess.run(["id", "-G"], capture_output=True, text=True, check=True).stdout.strip()
        return f"{os.getuid()}:{os.getgid()}:{groups}"
    return f"{user.pw_uid}:{user.pw_gid}:{user.pw_gid}"


def test_a_fed_tool_runs_as_the_service_user_when_root() -> None:
    run_checking(who_runs_it())


def test_a_fed_tool_that_fails_raises_with_its_exit() -> None:
    with pytest.raises(PgToolError, match="exited with 3"):
        run_checking("nobody:at:all")
