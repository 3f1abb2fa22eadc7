"""Point-in-time restore of one small tenant database: ours through the platform vs the same steps
scripted with the raw PostgreSQL tools, on the same WAL-archiving cluster, as the other tenants'
data on the host grows.

The tenant database is small: a ``sentinel`` row and about 10 MB of ``filler``. Another tenant's
database (created once through the API of a setup platform) holds ``BENCH_PITR_OTHER_MB`` MB of
table data, one round per listed size (default ``0,200,500``, ascending: it is only ever grown).
Base backups are of the whole cluster. The platform stores each database's directory apart and
fetches only the restored database's (plus the cluster's own files); the raw side unpacks its
whole tar, as a DBA's script would. The database restored stays the same size.

Each round starts a fresh platform on the cluster (its own namespace, metadata, ledger, PgBouncer
and filesystem object store), whose agent takes its base backup when it starts, holding the other
data as it is now; one platform with a short base backup interval would take base backups in the
middle of the measurements. Once that base backup is recorded, the raw side takes its own
``pg_basebackup`` with the same options (tar, gzip, no WAL, fast checkpoint), timed and reported
apart and counted on neither side: both sides start from an existing base backup. Only then is
the filler written, so both sides replay it. Like the end-to-end test, once the restore window
is open the sentinel is written (``first``), a moment noted, it is updated (``second``), a moment
noted, updated again (``third``), and WAL is switched until the window passes the last moment.

(a) ours: POST /databases/{id}/restore in place to the first moment → GET /operations/{id}?wait=2
    until ``succeeded`` (it answers as soon as the operation ends); the sentinel must then read
    ``first``. Its steps are timed from the agent's ledger, whose events carry when they
    happened, and the recovery step is split at lines of the temporary cluster's log, which is
    read every 0.1 s (so a split can be off by 0.1 s, and its last part can show as negative).
(b) raw, as a DBA would script it on the same host: commit and switch WAL, copy the segments
    from the raw base backup's start to the one just switched out of the cluster's ``pg_wal``
    (a physical replication slot made before the raw base backup keeps them there: the raw
    side's stand-in for a WAL archive of its own), unpack the tar, ``recovery.signal`` with a
    ``restore_command`` reading that copy, ``recovery_target_time`` and
    ``recovery_target_action=promote``, start ``postgres`` on a free port as the service user,
    poll every 0.1 s until it is promoted, ``pg_dump -Fc`` of the one database piped into
    ``pg_restore`` into a fresh database on the host, stop the temporary cluster (immediate
    shutdown) and remove it, swap the two databases with two renames in one transaction and
    drop the original: the platform's order. It restores to the second moment, so the sentinel
    must then read ``second``. Timed by phase, the recovery split at the same log lines.

Per round they alternate, ours first, ``BENCH_PITR_REPEATS`` times (default 2): each restore
changes the live value to the one the other side does not restore, so every check tells a
restore that worked from one that did nothing, and a wrong value fails the benchmark. The ratio
is our wall time over raw's, by best and by median run; the target is a median ratio of at most
1.3 in every round. Prints JSON; progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import uvloop
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.backup import BATCH_ROWS, CREATE_TABLE, FILL
from devstack.cluster import Cluster
from devstack.stack import Stack
from devstack.state import scratch_root
from infra.pg_tools import pg_bindir, tool_args
from infra.processes import becoming, free_port, owned_dir, service_user, spawn, stop
from infra.wal import SEGMENT, next_segment
from schemas.events import OperationStarted

OTHER_MB = [int(mb) for mb in os.environ.get("BENCH_PITR_OTHER_MB", "0,200,500").split(",")]
REPEATS = int(os.environ.get("BENCH_PITR_REPEATS", "2"))
PROBE_ROWS = 100_000
FILLER_ROWS = 150_000  # about 10 MB of (id, md5) rows
WAIT_SECONDS = 2.0
"""Each GET of the operation waits this long for its end, then the agent is checked."""
WATCH_SECONDS = 0.1
WINDOW_TIMEOUT = 300.0
MB = 10**6
RATIO_TARGET = 1.3
GROWTH_TARGET = 0.2
"""Seconds our restore may grow per 100 MB of other tenants' data on the host."""
SLOT = "bench_pitr_raw"
STARTED = OperationStarted.TYPE
RECOVERY_MARKERS = {
    "until_postgres_started": "starting PostgreSQL",
    "until_redo_started": "redo starts at",
    "replaying_wal": "redo done at",
    "ending_recovery": "database system is ready to accept connections",
}
"""The temporary cluster's log lines that end each phase of a recovery, in order."""


def progress(message: str) -> None:
    print(f"[bench.pitr] {message}", file=sys.stderr, flush=True)


def ok(response: httpx.Response) -> Any:
    if response.is_error:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


async def connect(dsn: str) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)


async def scalar(conn: psycopg.AsyncConnection[tuple[Any, ...]], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return row[0]


async def checked(
    args: list[str], *, env: dict[str, str] | None = None, stdin: IO[bytes] | None = None, as_service_user: bool = False
) -> None:
    """Run a tool to its end; a non-zero exit raises with the tail of its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=stdin or subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=becoming(service_user() if as_service_user else None),
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{Path(args[0]).name} exited with {proc.returncode}: {stderr.decode(errors='replace')[-1000:]}"
        )


class Phases:
    """Wall time of consecutive phases, each ending when ``done`` names it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 2)
        self._last = now


async def watch_log(log: Path, seen: dict[str, float], stop_watching: asyncio.Event) -> None:
    """Note the wall time at which each recovery marker first shows in ``log``."""
    while not stop_watching.is_set():
        with contextlib.suppress(FileNotFoundError):
            text = await asyncio.to_thread(log.read_text, errors="replace")
            now = time.time()
            for phase, marker in RECOVERY_MARKERS.items():
                if phase not in seen and marker in text:
                    seen[phase] = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_watching.wait(), WATCH_SECONDS)


def intervals(begin: float, marks: list[tuple[str, float]], last: str, end: float) -> dict[str, float]:
    """Seconds up to each named moment from the one before (from ``begin``), then up to ``end``."""
    names = [name for name, _ in marks] + [last]
    points = [begin] + [moment for _, moment in marks] + [end]
    return {
        name: round(later - earlier, 2) for name, earlier, later in zip(names, points[:-1], points[1:], strict=True)
    }


def recovery_split(begin: float, seen: dict[str, float], end: float) -> dict[str, float]:
    """A recovery from ``begin`` (unpacking) to ``end`` (promotion seen), split at the markers seen."""
    marks = [(phase, seen[phase]) for phase in RECOVERY_MARKERS if phase in seen]
    return intervals(begin, marks, "until_promotion_seen", end)


@dataclass
class Tenant:
    database_id: str
    dbname: str
    role: str
    uri: str


@dataclass
class RawBase:
    tar: Path
    start_segment: str
    seconds: float
    bytes: int


async def wait_succeeded(stack: Stack, http: httpx.AsyncClient, operation_id: str) -> dict[str, Any]:
    while True:
        operation: dict[str, Any] = ok(await http.get(f"/operations/{operation_id}", params={"wait": WAIT_SECONDS}))
        if operation["status"] == "succeeded":
            return operation
        if operation["status"] in ("failed", "compensated"):
            raise RuntimeError(
                f"operation {operation_id} {operation['status']}: {operation['error']}\n{stack.log_tail('agent')}"
            )
        if stack.procs["agent"].poll() is not None:
            raise RuntimeError(f"the agent exited:\n{stack.log_tail('agent')}")


async def sentinel(uri: str) -> str:
    async with await connect(uri) as conn:
        return str(await scalar(conn, "SELECT value FROM sentinel WHERE id = 1"))


async def drop_databases(cluster: Cluster, *names: str) -> None:
    async with await connect(cluster.superuser_dsn()) as conn:
        for name in names:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def platform(cluster: Cluster, root: Path, name: str) -> Stack:
    return Stack(
        cluster,
        root / name,
        namespace=f"benchpitr{name}",
        meta_db=f"bench_pitr_{name}_meta",
        ledger_db=f"bench_pitr_{name}_ledger",
    )


def api(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{stack.api_url}/api/v1", timeout=120, headers={"Authorization": f"Bearer {stack.admin_token}"}
    )


async def new_database(stack: Stack, http: httpx.AsyncClient, project: str) -> Tenant:
    created = ok(await http.post("/projects", json={"name": project}))
    accepted = ok(await http.post("/databases", json={"project_id": created["id"], "name": project}))
    await wait_succeeded(stack, http, accepted["operation"]["id"])
    database_id = accepted["database"]["id"]
    credentials = ok(await http.get(f"/databases/{database_id}/credentials"))
    return Tenant(database_id, credentials["dbname"], credentials["user"], credentials["uri"])


async def create_neighbour(cluster: Cluster, root: Path) -> str:
    """The other tenant's database with its (empty) table, through a setup platform's API; the
    platform is then stopped and its own databases dropped: the tenant database stays on the host."""
    stack = platform(cluster, root, "setup")
    try:
        stack.start()
        async with api(stack) as http:
            neighbour = await new_database(stack, http, "neighbour")
        async with await connect(neighbour.uri) as conn:
            await conn.execute(CREATE_TABLE)
    finally:
        stack.stop()
    await drop_databases(cluster, stack.meta_db, stack.ledger_db)
    await asyncio.to_thread(shutil.rmtree, stack.root)
    return neighbour.dbname


async def grow_neighbour(cluster: Cluster, dbname: str, target_mb: int) -> dict[str, Any]:
    """Fill the other tenant's table server-side until it holds ``target_mb`` MB."""
    started = time.perf_counter()
    target = target_mb * MB
    async with await connect(cluster.superuser_dsn(dbname)) as conn:
        rows = int(await scalar(conn, "SELECT count(*) FROM events"))
        size = int(await scalar(conn, "SELECT pg_table_size('events')"))
        grown = size < target
        while size < target:
            # After a small first batch, aim at the target from the bytes per row seen so far (2 % over).
            batch = PROBE_ROWS if rows == 0 else min(BATCH_ROWS, int((target - size) / (size / rows) * 1.02) + 1)
            await conn.execute(FILL, {"first": rows + 1, "last": rows + batch})
            rows += batch
            size = int(await scalar(conn, "SELECT pg_table_size('events')"))
            progress(f"other tenant: {rows} rows, {size / MB:.0f} MB")
        if grown:
            await conn.execute("VACUUM ANALYZE events")
            await conn.execute("CHECKPOINT")
    return {"table_mb": round(size / MB, 1), "rows": rows, "fill_seconds": round(time.perf_counter() - started, 1)}


async def window(http: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    found: dict[str, Any] = ok(await http.get(f"/databases/{tenant.database_id}/restore-window"))
    return found


async def wait_window(
    http: httpx.AsyncClient, tenant: Tenant, what: str, reached: Callable[[dict[str, Any]], bool]
) -> None:
    deadline = time.monotonic() + WINDOW_TIMEOUT
    while not reached(await window(http, tenant)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the restore window never showed {what}: {await window(http, tenant)}")
        await asyncio.sleep(0.3)


async def raw_base_backup(cluster: Cluster, directory: Path) -> RawBase:
    """``pg_basebackup`` into ``directory/base.tar.gz``, after a replication slot that keeps the
    WAL from here on in ``pg_wal`` and noting the segment in use (where replay will start)."""
    async with await connect(cluster.superuser_dsn()) as conn:
        await conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (SLOT,))
        start_segment = str(await scalar(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
    conninfo, env = tool_args(cluster.superuser_dsn(), "postgres")
    options = ["--format=tar", "--gzip", "--wal-method=none", "--checkpoint=fast", "--no-manifest"]
    started = time.perf_counter()
    await checked(
        [str(pg_bindir() / "pg_basebackup"), f"--pgdata={directory}", *options, f"--dbname={conninfo}"], env=env
    )
    seconds = time.perf_counter() - started
    tar = directory / "base.tar.gz"
    return RawBase(tar=tar, start_segment=start_segment, seconds=seconds, bytes=tar.stat().st_size)


async def fill_tenant(tenant: Tenant) -> float:
    """The tenant's ~10 MB of filler; returns its size in MB."""
    async with await connect(tenant.uri) as conn:
        await conn.execute(
            "CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, %s) AS g",
            (FILLER_ROWS,),
        )
        return round(int(await scalar(conn, "SELECT pg_table_size('filler')")) / MB, 1)


async def sentinel_history(tenant: Tenant) -> list[tuple[datetime, str]]:
    """Write a value, note the time, change it, note the time, change it again."""
    async with await connect(tenant.uri) as conn:
        await conn.execute("CREATE TABLE sentinel (id int PRIMARY KEY, value text NOT NULL)")
        await conn.execute("INSERT INTO sentinel VALUES (1, 'first')")
        noted = []
        for value in ("second", "third"):
            await asyncio.sleep(0.5)
            moment: datetime = await scalar(conn, "SELECT clock_timestamp()")
            noted.append((moment, str(await scalar(conn, "SELECT value FROM sentinel WHERE id = 1"))))
            await asyncio.sleep(0.5)
            await conn.execute("UPDATE sentinel SET value = %s WHERE id = 1", (value,))
    return noted


async def archived_past(cluster: Cluster, http: httpx.AsyncClient, tenant: Tenant, moment: datetime) -> None:
    """Switch WAL on the host until the restore window reaches ``moment``."""
    deadline = time.monotonic() + WINDOW_TIMEOUT
    while True:
        async with await connect(cluster.superuser_dsn()) as conn:
            await conn.execute("SELECT txid_current()")
            await conn.execute("SELECT pg_switch_wal()")
        latest = (await window(http, tenant))["latest"]
        if latest and datetime.fromisoformat(latest) >= moment:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the restore window never reached {moment}")
        await asyncio.sleep(0.5)


async def ledger_rows(stack: Stack, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of the agent's ledger on the data host (when each event happened, base backups, WAL)."""
    async with await connect(stack.cluster.superuser_dsn(stack.ledger_db)) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def platform_base_backup(stack: Stack) -> dict[str, Any]:
    [(start_segment, size, started, finished)] = await ledger_rows(
        stack,
        "SELECT start_segment, (size_bytes + coalesce((SELECT sum((part->>'size_bytes')::bigint)"
        " FROM jsonb_each(parts) AS stored(oid, part)), 0))::bigint, started_at, finished_at"
        " FROM base_backups ORDER BY finished_at DESC LIMIT 1",
    )
    return {
        "start_segment": start_segment,
        "seconds": round((finished - started).total_seconds(), 2),
        "bytes": size,
        "mb": round(size / MB, 1),
    }


async def our_restore(stack: Stack, http: httpx.AsyncClient, tenant: Tenant, moment: datetime) -> dict[str, Any]:
    """An in-place restore through the API, timed from the POST until the poll sees ``succeeded``."""
    body = {"point_in_time": moment.isoformat(), "target": "in_place"}
    posted = time.time()
    started = time.perf_counter()
    accepted = ok(await http.post(f"/databases/{tenant.database_id}/restore", json=body))
    operation_id = accepted["operation"]["id"]
    seen: dict[str, float] = {}
    stop_watching = asyncio.Event()
    log = stack.work_dir / uuid.UUID(operation_id).hex / "cluster" / "postgres.log"
    watcher = asyncio.create_task(watch_log(log, seen, stop_watching))
    try:
        operation = await wait_succeeded(stack, http, operation_id)
    finally:
        stop_watching.set()
        await watcher
    seconds = time.perf_counter() - started
    reported = time.time()
    events = [
        (
            "until_started" if kind == STARTED else step or kind.rpartition(".")[2],
            datetime.fromisoformat(occurred).timestamp(),
        )
        for kind, step, occurred in await ledger_rows(
            stack,
            "SELECT type, envelope->'data'->>'step', envelope->>'occurred_at' FROM ledger_events"
            " WHERE operation_id = %s ORDER BY sequence",
            (operation_id,),
        )
    ]
    at = dict(events)
    [(fetched, archived)] = await ledger_rows(
        stack,
        "SELECT (SELECT (envelope->'data'->'outputs'->>'wal_segments_fetched')::int FROM ledger_events"
        "  WHERE operation_id = %s AND envelope->'data'->>'step' = 'point_in_time_recovered'),"
        " (SELECT count(*) FROM wal_archive WHERE segment >= %s)",
        (operation_id, (await platform_base_backup(stack))["start_segment"]),
    )
    return {
        "seconds": round(seconds, 2),
        "steps": [{"name": step["name"], "status": step["status"]} for step in operation["steps"]],
        "phases_seconds": intervals(posted, events, "until_poll_saw_it", reported),
        "recovery_seconds": recovery_split(at["wal_checked"], seen, at["point_in_time_recovered"]),
        "wal_segments_fetched": fetched,
        "wal_segments_archived_since_the_base_backup": archived,
    }


def copy_segments(pg_wal: Path, first: str, last: str, into: Path) -> int:
    """Copy the WAL segments ``first``..``last`` out of ``pg_wal``; a gap is an error."""
    into.mkdir(parents=True)
    names = sorted(p.name for p in pg_wal.iterdir() if SEGMENT.match(p.name) and first <= p.name <= last)
    expected = first
    for name in names:
        if name != expected:
            raise RuntimeError(f"WAL segment {expected} is no longer in pg_wal")
        shutil.copyfile(pg_wal / name, into / name)
        expected = next_segment(expected)
    if expected != next_segment(last):
        raise RuntimeError(f"WAL segment {expected} is missing from pg_wal")
    owned_dir(into)
    return len(names)


async def wait_promoted(dsn: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    while True:
        if proc.poll() is not None:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            tail = "\n".join(text.splitlines()[-10:])
            raise RuntimeError(f"point-in-time recovery failed:\n{tail}")
        with contextlib.suppress(psycopg.OperationalError):
            async with await connect(dsn) as conn:
                if await scalar(conn, "SELECT pg_is_in_recovery()") is False:
                    return
        await asyncio.sleep(WATCH_SECONDS)


async def dump_into(source_dsn: str, target_dsn: str, tenant: Tenant, fresh: str) -> None:
    """``pg_dump -Fc`` of the tenant's database piped straight into ``pg_restore`` into ``fresh``."""
    source, source_env = tool_args(source_dsn, tenant.dbname)
    target, target_env = tool_args(target_dsn, fresh)
    read_end, write_end = os.pipe()
    try:
        dump = await asyncio.create_subprocess_exec(
            str(pg_bindir() / "pg_dump"),
            "--format=custom",
            f"--dbname={source}",
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=source_env,
        )
        restore = await asyncio.create_subprocess_exec(
            str(pg_bindir() / "pg_restore"),
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            f"--role={tenant.role}",
            f"--dbname={target}",
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=target_env,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    (_, dump_err), (_, restore_err) = await asyncio.gather(dump.communicate(), restore.communicate())
    if dump.returncode != 0 or restore.returncode != 0:
        raise RuntimeError(
            f"pg_dump exited with {dump.returncode}, pg_restore with {restore.returncode}:"
            f" {dump_err.decode(errors='replace')} {restore_err.decode(errors='replace')}"
        )


async def raw_restore(cluster: Cluster, base: RawBase, work: Path, tenant: Tenant, moment: datetime) -> dict[str, Any]:
    """The same restore, in place, by hand with the PostgreSQL tools."""
    fresh, original = "bench_pitr_restored", "bench_pitr_original"
    data, wal, log = work / "pgdata", work / "wal", work / "postgres.log"
    started = time.perf_counter()
    phases = Phases()
    async with await connect(cluster.superuser_dsn()) as conn:
        await conn.execute("SELECT txid_current()")
        sealed = str(await scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())"))
        pg_wal = Path(str(await scalar(conn, "SHOW data_directory"))) / "pg_wal"
    phases.done("seal_wal")
    segments = await asyncio.to_thread(copy_segments, pg_wal, base.start_segment, sealed, wal)
    phases.done("copy_wal")
    owned_dir(data).chmod(0o700)
    with base.tar.open("rb") as tar:
        await checked(["tar", "-xz", "-C", str(data)], stdin=tar, as_service_user=True)
    (data / "recovery.signal").touch()
    if user := service_user():
        os.chown(data / "recovery.signal", user.pw_uid, user.pw_gid)
    phases.done("unpack")
    port = free_port()
    options = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "archive_mode": "off",
        "hot_standby": "off",  # as the agent's: no need to match the host's max_connections
        "restore_command": f"cp {wal}/%f %p",
        "recovery_target_time": moment.isoformat(sep=" "),
        "recovery_target_action": "promote",
    }
    args = [str(pg_bindir() / "postgres"), "-D", str(data)]
    for name, value in options.items():
        args += ["-c", f"{name}={value}"]
    seen: dict[str, float] = {}
    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(watch_log(log, seen, stop_watching))
    recovery_started = time.time()
    proc = spawn(args, log, as_service_user=True)
    try:
        temp_dsn = make_conninfo(cluster.superuser_dsn(), port=str(port))
        try:
            await wait_promoted(temp_dsn, proc, log)
        finally:
            promoted = time.time()
            stop_watching.set()
            await watcher
        phases.done("recovery")
        async with await connect(cluster.superuser_dsn()) as conn:
            await conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(fresh), sql.Identifier(tenant.role))
            )
            await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(fresh)))
        await dump_into(temp_dsn, cluster.superuser_dsn(), tenant, fresh)
        phases.done("dump_restore")
    finally:
        await asyncio.to_thread(stop, proc, sig=signal.SIGQUIT)  # immediate shutdown
    phases.done("stop_temporary_cluster")
    await asyncio.to_thread(shutil.rmtree, work)
    phases.done("remove_temporary_cluster")
    async with await connect(cluster.superuser_dsn()) as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY(%s)",
            ([tenant.dbname, fresh],),
        )
        for old, new in ((tenant.dbname, original), (fresh, tenant.dbname)):
            await conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
            )
    phases.done("swap")
    await drop_databases(cluster, original)
    phases.done("drop_original")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "phases_seconds": phases.seconds,
        "recovery_seconds": recovery_split(recovery_started, seen, promoted),
        "wal_segments_copied": segments,
    }


async def cluster_mb(cluster: Cluster) -> float:
    async with await connect(cluster.superuser_dsn()) as conn:
        size = int(await scalar(conn, "SELECT sum(pg_database_size(datname)) FROM pg_database"))
    return round(size / MB, 1)


async def checked_restore(
    side: str, restore: Awaitable[dict[str, Any]], tenant: Tenant, expected: str
) -> dict[str, Any]:
    """Run one side's restore, then read the sentinel back: a wrong value fails the benchmark."""
    progress(f"{side}: restoring in place")
    result = await restore
    result["restored_value"] = await sentinel(tenant.uri)
    if result["restored_value"] != expected:
        raise RuntimeError(f"{side} restored {result['restored_value']!r}, expected {expected!r}")
    progress(f"{side}: {result['seconds']} s")
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [run["seconds"] for run in runs]
    return {"runs": runs, "best_seconds": min(seconds), "median_seconds": round(statistics.median(seconds), 2)}


async def measure_round(stack: Stack, raw_dir: Path) -> dict[str, Any]:
    cluster = stack.cluster
    async with api(stack) as http:
        tenant = await new_database(stack, http, "tenant")
        await wait_window(http, tenant, "a base backup", lambda found: found["base_backups"] >= 1)
        base = await raw_base_backup(cluster, raw_dir / "base")
        progress(f"raw base backup {base.bytes / MB:.0f} MB in {base.seconds:.1f} s")
        try:
            filler_mb = await fill_tenant(tenant)
            await wait_window(http, tenant, "an earliest moment", lambda found: found["earliest"] is not None)
            noted = await sentinel_history(tenant)
            await archived_past(cluster, http, tenant, noted[-1][0])
            size_mb = await cluster_mb(cluster)
            ours_runs, raw_runs = [], []
            for repeat in range(REPEATS):
                (moment, value), (raw_moment, raw_value) = noted
                ours = our_restore(stack, http, tenant, moment)
                ours_runs.append(await checked_restore("ours", ours, tenant, value))
                raw = raw_restore(cluster, base, raw_dir / f"restore{repeat}", tenant, raw_moment)
                raw_runs.append(await checked_restore("raw", raw, tenant, raw_value))
        finally:
            async with await connect(cluster.superuser_dsn()) as conn:
                await conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
        deleted = ok(await http.delete(f"/databases/{tenant.database_id}"))
        await wait_succeeded(stack, http, deleted["operation"]["id"])
    ours_summary, raw_summary = summary(ours_runs), summary(raw_runs)
    return {
        "cluster_mb": size_mb,
        "tenant_filler_mb": filler_mb,
        "platform_base_backup": await platform_base_backup(stack),
        "raw_base_backup": {"seconds": round(base.seconds, 2), "bytes": base.bytes, "mb": round(base.bytes / MB, 1)},
        "ours": ours_summary,
        "raw": raw_summary,
        "ratio_best": round(ours_summary["best_seconds"] / raw_summary["best_seconds"], 3),
        "ratio_median": round(ours_summary["median_seconds"] / raw_summary["median_seconds"], 3),
    }


def growth(rounds: list[dict[str, Any]], side: str) -> float | None:
    """Least-squares seconds per 100 MB of other tenants' data, when the sizes differ."""
    sizes = [r["other_tenant"]["table_mb"] for r in rounds]
    if len(set(sizes)) < 2:
        return None
    return round(statistics.linear_regression(sizes, [r[side]["median_seconds"] for r in rounds]).slope * 100, 3)


async def run(cluster: Cluster, root: Path) -> dict[str, Any]:
    neighbour = await create_neighbour(cluster, root)
    rounds: list[dict[str, Any]] = []
    for index, other_mb in enumerate(OTHER_MB):
        other = await grow_neighbour(cluster, neighbour, other_mb)
        progress(f"round {index}: other tenant {other['table_mb']} MB; starting a platform")
        stack = platform(cluster, root, str(index))
        raw_dir = root / f"raw{index}"
        raw_dir.mkdir()
        try:
            stack.start()
            measured = await measure_round(stack, raw_dir)
        finally:
            stack.stop()
        await drop_databases(cluster, stack.meta_db, stack.ledger_db)
        await asyncio.to_thread(shutil.rmtree, stack.root)
        await asyncio.to_thread(shutil.rmtree, raw_dir)
        rounds.append({"other_mb": other_mb, "other_tenant": other} | measured)
        progress(f"round {index}: median ratio ours/raw {measured['ratio_median']}")
    worst = max(r["ratio_median"] for r in rounds)
    ours_growth, raw_growth = growth(rounds, "ours"), growth(rounds, "raw")
    return {
        "benchmark": "pitr",
        "ours": {
            "median_seconds": [r["ours"]["median_seconds"] for r in rounds],
            "seconds_per_100_mb_of_other_tenants": ours_growth,
        },
        "raw": {
            "median_seconds": [r["raw"]["median_seconds"] for r in rounds],
            "seconds_per_100_mb_of_other_tenants": raw_growth,
        },
        "ratio_pitr_worst_median": worst,
        "cpu_count": os.cpu_count(),
        "object_store": "file",
        "wait_seconds": WAIT_SECONDS,
        "repeats": REPEATS,
        "rounds": rounds,
        "scaling": {
            "other_mb": [r["other_tenant"]["table_mb"] for r in rounds],
            "ours_median_seconds": [r["ours"]["median_seconds"] for r in rounds],
            "raw_median_seconds": [r["raw"]["median_seconds"] for r in rounds],
            "ratio_median": [r["ratio_median"] for r in rounds],
            "ours_seconds_per_100_mb": ours_growth,
            "raw_seconds_per_100_mb": raw_growth,
        },
        "targets": {
            "ratio_max": RATIO_TARGET,
            "worst_median_ratio": worst,
            "ratio_met": worst <= RATIO_TARGET,
            "growth_max_seconds_per_100_mb": GROWTH_TARGET,
            "growth_met": ours_growth is not None and ours_growth <= GROWTH_TARGET,
        },
    }


async def main() -> None:
    if sorted(OTHER_MB) != OTHER_MB:
        raise SystemExit("BENCH_PITR_OTHER_MB must be ascending: the other tenant's data only grows")
    root = scratch_root("pgplane-bench-pitr-")
    cluster = Cluster(root, wal_archive=True)
    try:
        cluster.start()
        result = await run(cluster, root)
    except BaseException:
        progress(f"failed; state and logs kept in {root}")
        raise
    finally:
        cluster.stop()
    shutil.rmtree(root)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    uvloop.run(main())
