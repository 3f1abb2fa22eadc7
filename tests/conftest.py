"""Shared fixtures: ONE PostgreSQL cluster and ONE NATS per session, started by the project's
own supervisor; every test gets a fresh platform on them (namespace, databases, PgBouncer,
API, agent, projector). A server that cannot start fails the session loudly."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from infra.supervisor import Cluster, Stack
from tests.platform_client import PlatformClient
from tests.s3 import s3_server

__all__ = ["s3_server"]

FAST_RETRIES = {
    "PGPLANE_MAX_ATTEMPTS": "3",
    "PGPLANE_RETRY_DELAY_SECONDS": "0.2",
    "PGPLANE_ACK_WAIT_SECONDS": "5",
}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pgplane-test-"))
    servers = Cluster(root, wal_archive=False)  # point-in-time tests have their own archiving host
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)


def new_stack(cluster: Cluster, **env: str) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    return Stack(
        cluster,
        cluster.root / f"t{suffix}",
        namespace=f"t{suffix}",
        meta_db=f"meta_{suffix}",
        ledger_db=f"ledger_{suffix}",
        extra_env=FAST_RETRIES | env,
    )


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Override in a test module to start the platform with other settings."""
    return {}


@pytest.fixture
def stack(cluster: Cluster, stack_env: dict[str, str]) -> Iterator[Stack]:
    platform = new_stack(cluster, **stack_env)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[PlatformClient]:
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=30) as http:
        yield PlatformClient(http, stack)
