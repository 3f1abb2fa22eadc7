"""The agent's PgBouncer admin console on a real PgBouncer: one connection serves every command
(a new one per command cost a SCRAM login each), a command's own error leaves it serving, and
after PgBouncer restarts the next command goes through on a new connection without an error."""

from __future__ import annotations

import psycopg
import pytest

from devstack.stack import Stack
from infra.pgbouncer import ADMIN_USER, PgBouncer


@pytest.fixture
def stack_processes() -> tuple[str, ...]:
    return ()  # the servers and PgBouncer, no platform process


async def console_ports(bouncer: PgBouncer) -> list[object]:
    """The client ports of the console's connections (SHOW CLIENTS: type, user, database, state,
    addr, port, ...); a kept connection keeps its port."""
    return [row[5] for row in await bouncer.admin("SHOW CLIENTS") if row[1] == ADMIN_USER]


async def test_one_console_connection_survives_errors_and_restarts(stack: Stack) -> None:
    bouncer = stack.bouncer()
    try:
        first = await console_ports(bouncer)
        assert len(first) == 1
        for _ in range(10):  # a command repeated is never prepared: the console does not speak that protocol
            await bouncer.admin("RELOAD")
        with pytest.raises(psycopg.Error, match="no such database"):
            await bouncer.admin("KILL no_such_database")
        assert await console_ports(bouncer) == first  # the same connection, the command's error too

        stack.stop_process("pgbouncer")
        stack.start_process("pgbouncer")
        assert await bouncer.admin("SHOW VERSION")  # reopened, no error for the caller
        assert len(await console_ports(bouncer)) == 1

        stack.stop_process("pgbouncer")
        with pytest.raises(psycopg.OperationalError):  # PgBouncer down: an error, not a hang
            await bouncer.admin("RELOAD")
        stack.start_process("pgbouncer")
        assert await bouncer.admin("SHOW VERSION")
    finally:
        await bouncer.close()
