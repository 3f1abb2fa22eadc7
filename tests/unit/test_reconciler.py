"""The reconciler's comparison of a host report with the read model (a pure function)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from producers.reconciler import Finding, Report, Served, compare
from schemas.commands import DriftKind


def served(n: int, *, status: str = "available", settled: bool = True) -> Served:
    hex_ = f"{n:032x}"
    return Served(uuid.UUID(hex_), uuid.uuid4(), f"db_{hex_}", f"u_{hex_}", status, settled)


def report(
    databases: list[str],
    roles: list[str],
    routes: list[str],
    mismatch: tuple[str, ...] = (),
    owners: dict[str, str] | None = None,
) -> Report:
    owned = {name: (owners or {}).get(name, "u_" + name.removeprefix("db_")) for name in databases}
    return Report(datetime.now(UTC), owned, frozenset(roles), frozenset(routes), frozenset(mismatch))


def kinds(findings: list[Finding]) -> set[tuple[DriftKind, str]]:
    return {(f.kind, f.object) for f in findings}


def test_a_host_that_matches_has_no_drift() -> None:
    a = served(1)
    found, unsettled = compare(report([a.dbname], [a.role], [a.dbname]), [a])
    assert found == [] and unsettled == set()


def test_each_kind_of_drift_about_a_served_database() -> None:
    a, b, c, d = served(1), served(2), served(3), served(4)
    seen = report(
        [b.dbname, c.dbname, d.dbname],
        [a.role, c.role, d.role],
        [a.dbname, b.dbname, d.dbname],
        mismatch=(c.role,),
        owners={d.dbname: "postgres"},
    )
    found, _ = compare(seen, [a, b, c, d])
    assert kinds(found) == {
        (DriftKind.DATABASE_MISSING, a.dbname),
        (DriftKind.ROLE_MISSING, b.role),
        (DriftKind.ROUTE_MISSING, c.dbname),
        (DriftKind.VERIFIER_CHANGED, c.role),
        (DriftKind.OWNER_CHANGED, d.dbname),
    }
    assert {f.database for f in found} == {a, b, c, d}


def test_a_suspended_database_is_compared_too() -> None:
    a = served(1, status="suspended")
    found, _ = compare(report([a.dbname], [], [a.dbname]), [a])
    assert kinds(found) == {(DriftKind.ROLE_MISSING, a.role)}


def test_what_pgplane_does_not_serve_is_orphaned_even_when_it_once_did() -> None:
    deleted = served(1, status="deleted")
    unknown = f"db_{'f' * 32}"
    seen = report([deleted.dbname, unknown], [deleted.role, "u_" + "e" * 32], [])
    found, _ = compare(seen, [deleted])
    assert kinds(found) == {
        (DriftKind.DATABASE_ORPHANED, deleted.dbname),
        (DriftKind.DATABASE_ORPHANED, unknown),
        (DriftKind.ROLE_ORPHANED, deleted.role),
        (DriftKind.ROLE_ORPHANED, "u_" + "e" * 32),
    }
    assert all(f.database is None for f in found)


def test_a_database_changed_since_the_report_is_left_out() -> None:
    creating = served(1, status="creating", settled=False)
    moved_on = served(2, settled=False)  # an operation ran after the report was taken
    deleted_since = served(3, status="deleted", settled=False)
    seen = report([deleted_since.dbname], [deleted_since.role, creating.role], [])
    found, unsettled = compare(seen, [creating, moved_on, deleted_since])
    assert found == []
    assert unsettled == {d.dbname for d in (creating, moved_on, deleted_since)} | {
        d.role for d in (creating, moved_on, deleted_since)
    }
