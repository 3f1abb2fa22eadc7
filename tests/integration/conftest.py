"""Fixtures of the integration tests: a migrated metadata database of each module's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devstack.cluster import CONTROL_ROLE, Cluster
from infra.metadata import migrate


@pytest.fixture(scope="module")
def metadata_dsn(cluster: Cluster) -> Iterator[str]:
    name = f"meta_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name, owner=CONTROL_ROLE)
    dsn = cluster.control_dsn(name)
    migrate.upgrade(dsn)
    yield dsn
