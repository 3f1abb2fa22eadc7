"""Ending a database's sessions waits until PostgreSQL lists none of their processes, and gives
up after ``SESSIONS_GONE_SECONDS`` (the statement after it then meets what is left)."""

from __future__ import annotations

from typing import Any

import pytest

from infra import host_postgres
from infra.host_postgres import end_sessions_on


class Cursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class Server:
    """``sessions`` sessions, still listed for the first ``listed_for`` looks after they are told to end."""

    def __init__(self, listed_for: int, sessions: int = 1) -> None:
        self.listed_for = listed_for
        self.sessions = sessions
        self.statements: list[str] = []

    async def execute(self, query: str, params: tuple[Any, ...]) -> Cursor:
        ending = "pg_terminate_backend" in query
        self.statements.append("end" if ending else "look")
        if ending:
            return Cursor([(True,)] * self.sessions)
        listed = self.listed_for > 0
        self.listed_for -= 1
        return Cursor([(1,)] * self.sessions if listed else [])


async def test_it_looks_until_no_process_is_listed() -> None:
    server = Server(listed_for=3)
    await end_sessions_on(server, ["db_a"])  # type: ignore[arg-type]
    assert server.statements == ["end", "look", "look", "look", "look"]


async def test_with_no_session_to_end_it_does_not_look() -> None:
    server = Server(listed_for=3, sessions=0)
    await end_sessions_on(server, ["db_a"])  # type: ignore[arg-type]
    assert server.statements == ["end"]


async def test_it_gives_up_after_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_postgres, "SESSIONS_GONE_SECONDS", 0.05)
    server = Server(listed_for=10**6)
    await end_sessions_on(server, ["db_a"])  # type: ignore[arg-type]
    assert 2 < len(server.statements) < 10**6
