"""PgBouncer's route files: one database's change keeps the other routes, changes made at once
share a reload, and a full reading never overwrites a newer change (the console is a fake here;
the e2e tests route, reroute and unroute through a real PgBouncer)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from infra import pgbouncer
from infra.pgbouncer import PgBouncer, Route, RoutesNotLoaded


def route(n: int, verifier: str = "SCRAM-SHA-256$4096:a$b:c") -> Route:
    return Route(uuid.UUID(int=n), f"db_{n:032x}", f"u_{n:032x}", verifier, 5)


class Ledger:
    """What the ledger says now."""

    def __init__(self, *routes: Route) -> None:
        self.routes = {r.dbname: r for r in routes}

    async def all(self) -> list[Route]:
        return list(self.routes.values())

    def one(self, dbname: str) -> Route | None:
        return self.routes.get(dbname)


class Console:
    """Records each command with the routes file as PgBouncer would read it then."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.reloads: list[str] = []

    async def admin(self, command: str) -> list[tuple[object, ...]]:
        assert command == "RELOAD"
        self.reloads.append((self.directory / "databases.ini").read_text())
        await asyncio.sleep(0.01)  # a reload takes a while: changes pile up behind it
        return []


@pytest.fixture
def bouncer_and_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PgBouncer, Console]:
    bouncer = PgBouncer(directory=tmp_path, port=1, admin_password="x", server_host="127.0.0.1", server_port=2)
    console = Console(tmp_path)
    monkeypatch.setattr(bouncer, "admin", console.admin)
    return bouncer, console


def routed(directory: Path) -> list[str]:
    return [line.split(" = ")[0] for line in (directory / "databases.ini").read_text().splitlines()[1:]]


def users(directory: Path) -> list[str]:
    return (directory / "userlist.txt").read_text().splitlines()[1:]


async def test_one_database_changes_and_the_others_stay(
    bouncer_and_console: tuple[PgBouncer, Console], tmp_path: Path
) -> None:
    bouncer, console = bouncer_and_console
    ledger = Ledger(route(3), route(1))
    await bouncer.apply(ledger.all)
    assert routed(tmp_path) == [route(1).dbname, route(3).dbname]  # sorted: the same routes, the same files

    async def read(dbname: str) -> Route | None:
        return ledger.one(dbname)

    ledger.routes[route(2).dbname] = route(2)
    await bouncer.apply_one(route(2).dbname, lambda: read(route(2).dbname))
    assert routed(tmp_path) == [route(n).dbname for n in (1, 2, 3)]

    routes_file = (tmp_path / "databases.ini").stat().st_ino
    ledger.routes[route(1).dbname] = route(1, verifier="SCRAM-SHA-256$4096:n$e:w")
    await bouncer.apply_one(route(1).dbname, lambda: read(route(1).dbname))
    assert f'"{route(1).role}" "SCRAM-SHA-256$4096:n$e:w"' in users(tmp_path)
    assert len(users(tmp_path)) == 3
    assert (tmp_path / "databases.ini").stat().st_ino == routes_file  # a rotation rewrites only the logins

    await bouncer.apply_one(route(1).dbname, lambda: read(route(1).dbname))  # nothing changed: nothing to do
    assert len(console.reloads) == 3

    del ledger.routes[route(3).dbname]
    await bouncer.apply_one(route(3).dbname, lambda: read(route(3).dbname))
    assert routed(tmp_path) == [route(1).dbname, route(2).dbname]
    assert [line.split()[0] for line in users(tmp_path)] == [f'"{route(n).role}"' for n in (1, 2)]
    assert len(console.reloads) == 4  # one per change, each after its files were written


async def test_one_database_before_the_routes_were_read_is_refused(
    bouncer_and_console: tuple[PgBouncer, Console], tmp_path: Path
) -> None:
    bouncer, console = bouncer_and_console

    async def one() -> Route | None:
        return route(1)

    with pytest.raises(RoutesNotLoaded):
        await bouncer.apply_one(route(1).dbname, one)
    assert not (tmp_path / "databases.ini").exists() and console.reloads == []


async def test_changes_made_at_once_share_reloads_and_each_waits_for_one_that_carries_it(
    bouncer_and_console: tuple[PgBouncer, Console], tmp_path: Path
) -> None:
    bouncer, console = bouncer_and_console
    await bouncer.apply(Ledger().all)
    console.reloads.clear()
    carried: dict[str, bool] = {}

    async def add(n: int) -> None:
        async def read() -> Route:
            return route(n)

        await bouncer.apply_one(route(n).dbname, read)
        carried[route(n).dbname] = any(route(n).dbname in routes for routes in console.reloads)

    await asyncio.gather(*(add(n) for n in range(1, 9)))
    assert carried == {route(n).dbname: True for n in range(1, 9)}  # none returned before a reload had its line
    assert 1 <= len(console.reloads) < 8
    assert routed(tmp_path) == [route(n).dbname for n in range(1, 9)]


async def test_a_full_reading_never_overwrites_a_newer_change(
    bouncer_and_console: tuple[PgBouncer, Console], tmp_path: Path
) -> None:
    bouncer, _ = bouncer_and_console
    ledger = Ledger(route(1))
    await bouncer.apply(ledger.all)
    reading = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_full_reading() -> list[Route]:
        taken = await ledger.all()  # what the ledger said when the reading began
        reading.set()
        await go_on.wait()
        return taken

    full = asyncio.create_task(bouncer.apply(slow_full_reading))
    await reading.wait()
    ledger.routes[route(2).dbname] = route(2)  # a create commits while the full reading is under way

    async def read_two() -> Route | None:
        return ledger.one(route(2).dbname)

    one = asyncio.create_task(bouncer.apply_one(route(2).dbname, read_two))
    await asyncio.sleep(0.02)
    go_on.set()
    await asyncio.gather(full, one)
    assert routed(tmp_path) == [route(1).dbname, route(2).dbname]


async def test_after_a_failed_write_the_next_change_writes_again(
    bouncer_and_console: tuple[PgBouncer, Console], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bouncer, console = bouncer_and_console
    await bouncer.apply(Ledger(route(1)).all)
    rotated = route(1, verifier="SCRAM-SHA-256$4096:n$e:w")

    async def read() -> Route:
        return rotated

    def full_disk(path: Path, text: str, *, mode: int) -> None:
        raise OSError("no space left on device")

    writes = pgbouncer._replace
    monkeypatch.setattr(pgbouncer, "_replace", full_disk)
    with pytest.raises(OSError):
        await bouncer.apply_one(rotated.dbname, read)
    monkeypatch.setattr(pgbouncer, "_replace", writes)
    await bouncer.apply_one(rotated.dbname, read)  # the step again: the same route, but the files missed it
    assert f'"{rotated.role}" "{rotated.verifier}"' in users(tmp_path)
    assert len(console.reloads) == 2
