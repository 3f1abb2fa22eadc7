"""A point-in-time restore unpacks only what its database needs: the other tenants' directories
under ``base/`` stay in the archive; everything else (the cluster's own files, the restored
database, scratch and platform databases) is written."""

from __future__ import annotations

import asyncio
import io
import shutil
import signal
import tarfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.agent.ledger import BaseBackup
from consumers.agent.steps.point_in_time import _other_databases
from consumers.agent.temp_cluster import TempCluster
from devstack.state import scratch_root
from infra.errors import PermanentError
from infra.pg_tools import pg_bindir
from infra.processes import owned_dir, spawn

FILES = [
    "PG_VERSION",
    "global/1262",
    "base/1/1259",
    "base/16384/2600",
    "base/16390/2600",
    "base/16390/2601",
    "base/163900/2600",  # another directory that starts like a left-out one
    "base/16400/2600",
]
OIDS = {"template1": 1, "db_restored": 16384, "db_neighbour": 16390, "rs_scratch": 163900, "gone_1a2b": 16400}


def base_tar_gz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in FILES:
            body = name.encode()
            member = tarfile.TarInfo(name)
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    return out.getvalue()


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


async def test_only_the_other_tenants_databases_are_left_out() -> None:
    now = datetime.now(UTC)
    base = BaseBackup(
        id=uuid.uuid4(),
        object_key="k",
        sha256="0" * 64,
        size_bytes=1,
        start_segment="1",
        stop_segment="2",
        started_at=now,
        finished_at=now,
        database_oids=OIDS,
    )
    leave_out = _other_databases(base, "db_restored")
    assert leave_out == [16390, 16400]
    assert _other_databases(BaseBackup(**{**base.__dict__, "database_oids": None}), "db_restored") == []

    root = scratch_root("pgplane-unpack-")
    try:
        cluster = TempCluster(root / "cluster", "postgresql://unused")
        await cluster.unpack([pieces(base_tar_gz())], leave_out=leave_out)
        unpacked = sorted(str(p.relative_to(cluster.data)) for p in cluster.data.rglob("*") if p.is_file())
        assert unpacked == sorted(name for name in FILES if not name.startswith(("base/16390/", "base/16400/")))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_missing_page_outside_the_left_out_databases_fails_the_recovery(tmp_path: Path) -> None:
    cluster = TempCluster(tmp_path, "postgresql://unused")
    cluster.log.write_text(
        "WARNING:  page 3 of relation base/16390/16400 does not exist\n"
        "WARNING:  page 0 of relation base/16390/16400_vm is uninitialized\n"
    )
    cluster._check_missing_pages([16390])  # the neighbour's pages: expected, passed over
    cluster.log.write_text(cluster.log.read_text() + "WARNING:  page 7 of relation base/16384/2600 does not exist\n")
    with pytest.raises(PermanentError, match="pages missing from the base backup") as refused:
        cluster._check_missing_pages([16390])
    assert refused.value.detail == "base/16384/2600"


async def test_a_cluster_stopped_while_it_starts_is_stopped() -> None:
    """A cancel can land between the postmaster's start and its pid file: stop ends it anyway,
    also when the agent, and so the postmaster until it sets its handlers, ignores SIGQUIT."""
    root = scratch_root("pgplane-starting-")
    try:
        cluster = TempCluster(root / "cluster", "postgresql://unused")
        owned_dir(cluster.root)
        initdb = spawn(
            [str(pg_bindir() / "initdb"), "-D", str(cluster.data)], root / "initdb.log", as_service_user=True
        )
        assert await asyncio.to_thread(initdb.wait) == 0, (root / "initdb.log").read_text()
        ignored = signal.signal(signal.SIGQUIT, signal.SIG_IGN)  # as in a script's background job
        try:
            starting = asyncio.create_task(cluster.start())
            await asyncio.sleep(0)  # the postmaster is spawned; its pid file is not written yet
        finally:
            signal.signal(signal.SIGQUIT, ignored)
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        assert cluster._proc is not None and cluster._proc.poll() is None
        await cluster.stop()
        assert cluster._proc.poll() == 0, "stopped by its immediate shutdown, not killed"
    finally:
        shutil.rmtree(root, ignore_errors=True)
