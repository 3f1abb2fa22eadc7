"""Platforms whose backups go to the filesystem or to S3, and helpers the backup tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg

from devstack.stack import Stack
from entrypoints import bootstrap
from infra.object_store import ObjectStore
from tests.platform_client import PlatformClient, Tenant


def stack_store(stack: Stack) -> ObjectStore:
    """The platform's own object store, opened the way its processes open it."""
    return bootstrap.object_store(stack.settings("agent"))


async def object_bytes(store: ObjectStore, key: str) -> bytes:
    return b"".join([piece async for piece in store.get(key)])


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


def connect(uri: str) -> psycopg.Connection:
    return psycopg.connect(uri, connect_timeout=5, autocommit=True)


def rows(uri: str, table: str = "items") -> list[tuple[Any, ...]]:
    with connect(uri) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


async def ready_database(client: PlatformClient, tenant: Tenant, name: str) -> tuple[str, str]:
    """A new available database; returns ``(database id, connection URI)``."""
    accepted = await client.create_database(tenant, name)
    await client.succeeded(tenant, accepted["operation"]["id"])
    database_id = accepted["database"]["id"]
    return database_id, (await client.credentials(tenant, database_id))["uri"]


async def backup(client: PlatformClient, tenant: Tenant, database_id: str) -> dict[str, Any]:
    """Take a backup and wait for it; returns the completed backup."""
    response = await client.http.post(f"/databases/{database_id}/backups", headers=tenant.headers)
    assert response.status_code == 202, response.text
    await client.succeeded(tenant, response.json()["operation"]["id"])
    found = await client.http.get(f"/backups/{response.json()['backup']['id']}", headers=tenant.headers)
    completed: dict[str, Any] = found.json()
    assert completed["status"] == "completed", completed
    return completed


async def restore(client: PlatformClient, tenant: Tenant, backup_id: str, **body: str) -> dict[str, Any]:
    """Ask for a restore and wait until it ends; returns the operation and the database."""
    response = await client.http.post(f"/backups/{backup_id}/restore", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    operation = await client.wait(tenant, response.json()["operation"]["id"])
    operation["database"] = response.json()["database"]
    return operation


def host_databases(stack: Stack, prefix: str) -> list[str]:
    """Databases on the data host whose name starts with ``prefix`` (scratch and kept copies)."""
    with psycopg.connect(stack.cluster.superuser_dsn()) as conn:
        found = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall()
    return [row[0] for row in found]
