"""Backup throughput: raw ``pg_dump -Fc`` into a file vs our end-to-end backup, in one run.

One cluster, one platform whose backups go to the filesystem object store, one database of a
``pro`` project filled to ``BENCH_BACKUP_GB`` GB (default 1; measured with ``pg_database_size``)
with realistically compressible rows: sequential ids and timestamps, a few repeated words,
values drawn from small sets and unique MD5 digests.

(a) raw: ``pg_dump --format=custom --file=...`` with the binary and the superuser connection the
    agent uses; the file is fsynced by pg_dump, as the object store fsyncs its object;
(b) ours: POST /databases/{id}/backups → GET /operations/{id}?wait=2 until ``succeeded``, i.e.
    pg_dump → AES-256-GCM chunks → SHA-256 → the filesystem object store (the GET answers as soon
    as the operation ends).

After an untimed warm-up dump, both run alternately (raw, ours, ...) ``BENCH_BACKUP_ROUNDS``
times (default 2) on the same warm database. For each run: wall time and throughput in MB/s
(10^6 bytes per second) of dump bytes and of database size, and the CPU seconds each platform
process used meanwhile (pg_dump, a child of the agent, is not counted in the agent's); for ours
also the stored object size, the dump bytes and the agent's peak RSS: its ``VmHWM``, reset
through ``/proc/<pid>/clear_refs`` before the backup and read after it. The ratio is ours/raw
throughput of database size, i.e. raw time / our time, by best and by median run; the targets
are a median ratio of at least 0.85 and a peak RSS under 200 MB. Then one backup of ours per
compression level in ``BENCH_BACKUP_LEVELS`` (default 0,1,9; the rounds use pg_dump's default):
time and stored size. Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop

from devstack.cluster import Cluster
from devstack.stack import UNTHROTTLED, Stack
from devstack.state import scratch_root
from infra.pg_tools import pg_bindir, tool_args

TARGET_GB = float(os.environ.get("BENCH_BACKUP_GB", "1.0"))
ROUNDS = int(os.environ.get("BENCH_BACKUP_ROUNDS", "2"))
BATCH_ROWS = 1_000_000
WAIT_SECONDS = 2.0
"""Each GET of the operation waits this long for its end, then the agent is checked."""
MB = 10**6
RATIO_TARGET = 0.85
PEAK_RSS_TARGET_MB = 200
LEVELS = [int(level) for level in os.environ.get("BENCH_BACKUP_LEVELS", "0,1,9").split(",") if level]

CREATE_TABLE = """
CREATE TABLE events (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    account text NOT NULL,
    kind text NOT NULL,
    digest text NOT NULL,
    payload text NOT NULL
)
"""

FILL = """
INSERT INTO events
SELECT g,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds',
       'user' || mod(g, 50000) || '@example.com',
       (ARRAY['login', 'logout', 'view', 'purchase', 'refund'])[1 + mod(g, 5)],
       md5(g::text),
       'session ' || repeat(md5(mod(g, 1000)::text), 3) || ' trace ' || md5((g * 7919)::text)
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def progress(message: str) -> None:
    print(f"[bench.backup] {message}", file=sys.stderr, flush=True)


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` such as ``VmRSS`` or ``VmHWM``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def platform_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) each platform process has used so far, from ``/proc/<pid>/stat``."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, proc in stack.procs.items():
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in sorted(before)}


def reset_peak_rss(pid: int) -> None:
    """Writing 5 to ``clear_refs`` resets the process's ``VmHWM`` to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def throughput(seconds: float, dump_bytes: int, database_bytes: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "dump_mb_per_s": round(dump_bytes / MB / seconds, 1),
        "database_mb_per_s": round(database_bytes / MB / seconds, 1),
    }


def summary(runs: list[dict[str, Any]], database_bytes: int) -> dict[str, Any]:
    """The best (fastest) and median run, by wall time."""
    seconds = [run["seconds"] for run in runs]
    dump_bytes = statistics.median(run["dump_bytes"] for run in runs)
    return {
        "best": throughput(min(seconds), int(dump_bytes), database_bytes),
        "median": throughput(statistics.median(seconds), int(dump_bytes), database_bytes),
    }


async def fill(stack: Stack, http: httpx.AsyncClient, database_id: str) -> dict[str, Any]:
    """The tenant creates its table; the superuser fills it server-side to the target size."""
    started = time.perf_counter()
    credentials = (await http.get(f"/databases/{database_id}/credentials")).raise_for_status().json()
    async with await psycopg.AsyncConnection.connect(credentials["uri"], autocommit=True) as tenant:
        await tenant.execute(CREATE_TABLE)
    target = int(TARGET_GB * 10**9)
    rows = 0
    async with await psycopg.AsyncConnection.connect(
        stack.cluster.superuser_dsn(credentials["dbname"]), autocommit=True
    ) as conn:

        async def database_size() -> int:
            cur = await conn.execute("SELECT pg_database_size(current_database())")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        empty = size = await database_size()
        while size < target:
            # After the first batch, aim at the target from the bytes per row seen so far (2 % over).
            wanted = BATCH_ROWS if rows == 0 else int((target - size) / ((size - empty) / rows) * 1.02) + 1
            batch = min(BATCH_ROWS, wanted)
            await conn.execute(FILL, {"first": rows + 1, "last": rows + batch})
            rows += batch
            size = await database_size()
            progress(f"filled {rows} rows, {size / MB:.0f} MB")
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("CHECKPOINT")
        size = await database_size()
    return {"dbname": credentials["dbname"], "rows": rows, "bytes": size, "seconds": time.perf_counter() - started}


async def raw_dump(cluster: Cluster, dbname: str, target: Path) -> tuple[float, int]:
    """Wall time and file size of ``pg_dump -Fc`` into ``target`` (removed afterwards)."""
    conninfo, env = tool_args(cluster.superuser_dsn(), dbname)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(pg_bindir() / "pg_dump"),
        "--format=custom",
        f"--file={target}",
        f"--dbname={conninfo}",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, stderr = await proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump exited with {proc.returncode}: {stderr.decode(errors='replace')}")
    size = (await asyncio.to_thread(target.stat)).st_size
    await asyncio.to_thread(target.unlink)
    return seconds, size


async def wait_succeeded(stack: Stack, http: httpx.AsyncClient, operation_id: str) -> None:
    while True:
        operation = (
            (await http.get(f"/operations/{operation_id}", params={"wait": WAIT_SECONDS})).raise_for_status().json()
        )
        if operation["status"] == "succeeded":
            return
        if operation["status"] in ("failed", "compensated"):
            raise RuntimeError(f"operation {operation_id} {operation['status']}: {operation['error']}")
        if stack.procs["agent"].poll() is not None:
            raise RuntimeError(f"the agent exited:\n{stack.log_tail('agent')}")


async def our_backup(stack: Stack, http: httpx.AsyncClient, database_id: str) -> dict[str, Any]:
    """One backup through the API, timed from the POST to the operation's ``succeeded``."""
    agent = stack.procs["agent"].pid
    rss_before_kb = proc_status_kb(agent, "VmRSS")
    reset_peak_rss(agent)
    cpu = platform_cpu(stack)
    started = time.perf_counter()
    accepted = (await http.post(f"/databases/{database_id}/backups")).raise_for_status().json()
    await wait_succeeded(stack, http, accepted["operation"]["id"])
    seconds = time.perf_counter() - started
    cpu_used = cpu_delta(cpu, platform_cpu(stack))
    peak_kb = proc_status_kb(agent, "VmHWM")
    backup = (await http.get(f"/backups/{accepted['backup']['id']}")).raise_for_status().json()
    if backup["status"] != "completed":
        raise RuntimeError(f"operation succeeded but the backup is {backup['status']}")
    return {
        "seconds": seconds,
        "agent_step_seconds": round(backup["duration_ms"] / 1000, 2),
        "dump_bytes": backup["dump_bytes"],
        "stored_bytes": backup["size_bytes"],
        "agent_rss_before_mb": round(rss_before_kb * 1024 / MB, 1),
        "agent_peak_rss_mb": round(peak_kb * 1024 / MB, 1),
        "platform_cpu_seconds": cpu_used,
    }


async def compression_levels(
    stack: Stack, http: httpx.AsyncClient, database_id: str, database_bytes: int
) -> list[dict[str, Any]]:
    """One backup of ours per ``PGPLANE_BACKUP_COMPRESSION_LEVEL`` (the agent restarted with it):
    what the setting trades, time against stored size."""
    found = []
    for level in LEVELS:
        stack.stop_process("agent")
        stack.start_process("agent", {"PGPLANE_BACKUP_COMPRESSION_LEVEL": str(level)})
        ours = await our_backup(stack, http, database_id)
        found.append(
            {"level": level, "seconds": round(ours["seconds"], 2), "stored_mb": round(ours["stored_bytes"] / MB, 1)}
            | throughput(ours["seconds"], ours["dump_bytes"], database_bytes)
        )
        progress(f"compression level {level}: {ours['seconds']:.1f} s, {ours['stored_bytes'] / MB:.0f} MB")
    stack.stop_process("agent")
    stack.start_process("agent")
    return found


async def run(stack: Stack, raw_dir: Path) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=f"{stack.api_url}/api/v1", timeout=120, headers={"Authorization": f"Bearer {stack.admin_token}"}
    ) as http:
        project = (await http.post("/projects", json={"name": "bench", "plan": "pro"})).raise_for_status().json()
        accepted = (
            (await http.post("/databases", json={"project_id": project["id"], "name": "bench"}))
            .raise_for_status()
            .json()
        )
        await wait_succeeded(stack, http, accepted["operation"]["id"])
        database_id = accepted["database"]["id"]
        database = await fill(stack, http, database_id)
        dbname, database_bytes = database["dbname"], database["bytes"]
        progress(f"database is {database_bytes / MB:.0f} MB; warm-up dump")
        warmup_seconds, _ = await raw_dump(stack.cluster, dbname, raw_dir / "warmup.pgdump")
        raw_runs: list[dict[str, Any]] = []
        our_runs: list[dict[str, Any]] = []
        for round_ in range(1, ROUNDS + 1):
            cpu = platform_cpu(stack)
            seconds, size = await raw_dump(stack.cluster, dbname, raw_dir / f"round{round_}.pgdump")
            raw_runs.append(
                {"round": round_, "dump_bytes": size}
                | throughput(seconds, size, database_bytes)
                | {"platform_cpu_seconds": cpu_delta(cpu, platform_cpu(stack))}
            )
            progress(f"round {round_}: raw {seconds:.1f} s")
            ours = await our_backup(stack, http, database_id)
            our_runs.append({"round": round_} | ours | throughput(ours["seconds"], ours["dump_bytes"], database_bytes))
            progress(f"round {round_}: ours {ours['seconds']:.1f} s")
        compression = await compression_levels(stack, http, database_id, database_bytes)
    raw, ours_summary = summary(raw_runs, database_bytes), summary(our_runs, database_bytes)
    peak_rss_mb = max(run["agent_peak_rss_mb"] for run in our_runs)
    ratio_best = round(ours_summary["best"]["database_mb_per_s"] / raw["best"]["database_mb_per_s"], 3)
    ratio_median = round(ours_summary["median"]["database_mb_per_s"] / raw["median"]["database_mb_per_s"], 3)
    return {
        "benchmark": "backup",
        "cpu_count": os.cpu_count(),
        "object_store": stack.env("agent")["PGPLANE_OBJECT_STORE_URL"].partition(":")[0],
        "database": {
            "bytes": database_bytes,
            "mb": round(database_bytes / MB, 1),
            "rows": database["rows"],
            "fill_seconds": round(database["seconds"], 1),
        },
        "rounds": ROUNDS,
        "warmup_raw_seconds": round(warmup_seconds, 2),
        "raw": {"runs": raw_runs} | raw,
        "ours": {"runs": our_runs} | ours_summary | {"agent_peak_rss_mb": peak_rss_mb},
        "compression_levels": compression,
        "ratio_throughput_best": ratio_best,
        "ratio_throughput_median": ratio_median,
        "targets": {
            "ratio_min": RATIO_TARGET,
            "peak_rss_mb_max": PEAK_RSS_TARGET_MB,
            "ratio_met": ratio_median >= RATIO_TARGET,
            "peak_rss_met": peak_rss_mb < PEAK_RSS_TARGET_MB,
        },
    }


async def main() -> None:
    root = scratch_root("pgplane-bench-backup-")
    raw_dir = root / "raw"
    raw_dir.mkdir()
    cluster = Cluster(root, wal_archive=False)
    stack = Stack(
        cluster,
        root / "ours",
        namespace="benchbackup",
        meta_db="bench_backup_meta",
        ledger_db="bench_backup_ledger",
        extra_env={"PGPLANE_BACKUP_DEADLINE_SECONDS": str(24 * 3600)} | UNTHROTTLED,
    )
    try:
        cluster.start()
        stack.start()
        result = await run(stack, raw_dir)
    except BaseException:
        progress(f"failed; state and logs kept in {root}")
        raise
    finally:
        stack.stop()
        cluster.stop()
    shutil.rmtree(root)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    uvloop.run(main())
