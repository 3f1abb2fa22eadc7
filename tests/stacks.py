"""Platforms for tests: a fresh namespace, databases and processes on a shared cluster, with
backups on the filesystem or on S3."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from devstack.cluster import Cluster
from devstack.s3_server import S3Server
from devstack.stack import PROCESSES, UNTHROTTLED, Stack

STORES = ["filesystem", "s3"]
FAST_RETRIES = {
    "PGPLANE_MAX_ATTEMPTS": "3",
    "PGPLANE_RETRY_DELAY_SECONDS": "0.2",
    "PGPLANE_ACK_WAIT_SECONDS": "5",
}


WITHOUT_SCHEDULER = tuple(p for p in PROCESSES if p not in ("scheduler", "webhooks"))
"""What most tests need: the scheduler and the webhook dispatcher run only where a test asks."""


def new_stack(
    cluster: Cluster, env: dict[str, str] | None = None, *, processes: tuple[str, ...] = WITHOUT_SCHEDULER
) -> Stack:
    """A platform on ``cluster``; the scheduler and the dispatcher run only where a test asks for them."""
    suffix = uuid.uuid4().hex[:10]
    return Stack(
        cluster,
        cluster.root / f"t{suffix}",
        namespace=f"t{suffix}",
        meta_db=f"meta_{suffix}",
        ledger_db=f"ledger_{suffix}",
        extra_env=FAST_RETRIES | UNTHROTTLED | (env or {}),
        processes=processes,
    )


def shared_stack(
    env: dict[str, str] | None = None, *, processes: tuple[str, ...] = WITHOUT_SCHEDULER
) -> Callable[..., Iterator[Stack]]:
    """A ``stack`` fixture for a module whose tests share one platform: each test works in its own
    project, and leaves every process running as it found it. Starting a platform costs seconds of
    CPU; a module of such tests pays it once."""

    @pytest.fixture(scope="module")
    def stack(cluster: Cluster) -> Iterator[Stack]:
        platform = new_stack(cluster, env, processes=processes)
        try:
            platform.start()
            yield platform
        finally:
            platform.stop()

    return stack


def store_env(kind: str, s3: S3Server) -> dict[str, str]:
    """Settings for a platform whose backups go to ``kind``; S3 gets a fresh bucket."""
    if kind == "filesystem":
        return {}
    bucket = f"b{uuid.uuid4().hex[:20]}"
    s3.create_bucket(bucket)
    options = s3.options()
    return {
        "PGPLANE_OBJECT_STORE_URL": f"s3://{bucket}/pgplane",
        "PGPLANE_S3_ENDPOINT_URL": s3.endpoint_url,
        "PGPLANE_S3_ACCESS_KEY_ID": options.access_key_id or "",
        "PGPLANE_S3_SECRET_ACCESS_KEY": options.secret_access_key or "",
    }


def started_stack(cluster: Cluster, kind: str, s3: S3Server, **env: str) -> Iterator[Stack]:
    platform = new_stack(cluster, store_env(kind, s3) | env)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
