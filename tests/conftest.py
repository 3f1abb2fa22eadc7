"""Shared fixtures: ONE PostgreSQL cluster and ONE NATS per session, started by the project's
own supervisor; every test gets a fresh platform on them (namespace, databases, PgBouncer,
API, agent, projector). A server that cannot start fails the session loudly."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from devstack.cluster import Cluster
from devstack.s3_server import S3Server
from devstack.stack import Stack
from devstack.state import scratch_root
from tests.platform_client import PlatformClient
from tests.s3 import s3_server
from tests.stacks import STORES, WITHOUT_SCHEDULER, new_stack, started_stack

__all__ = ["s3_server"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    root = scratch_root("pgplane-test-")
    servers = Cluster(root, wal_archive=False)  # point-in-time tests have their own archiving host
    try:
        servers.start()
        yield servers
    finally:
        servers.stop(discard=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Override in a test module to start the platform with other settings."""
    return {}


@pytest.fixture
def stack_processes() -> tuple[str, ...]:
    """Override in a test module that needs processes the default platform leaves out."""
    return WITHOUT_SCHEDULER


@pytest.fixture
def stack(cluster: Cluster, stack_env: dict[str, str], stack_processes: tuple[str, ...]) -> Iterator[Stack]:
    platform = new_stack(cluster, stack_env, processes=stack_processes)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[PlatformClient]:
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", timeout=30) as http:
        yield PlatformClient(http, stack)


@pytest.fixture(params=STORES)
def backup_stack(request: pytest.FixtureRequest, cluster: Cluster, s3_server: S3Server) -> Iterator[Stack]:
    """A platform whose backups go to the filesystem, then one whose backups go to S3."""
    yield from started_stack(cluster, request.param, s3_server)


@pytest.fixture
async def backup_client(backup_stack: Stack) -> AsyncIterator[PlatformClient]:
    async with httpx.AsyncClient(base_url=f"{backup_stack.api_url}/api/v1", timeout=30) as http:
        yield PlatformClient(http, backup_stack)
