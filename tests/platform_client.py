"""A small client for the public API, plus looks at the data host, used by the tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from devstack.stack import Stack

TERMINAL = {"succeeded", "failed", "compensated"}


@dataclass
class Tenant:
    project_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class PlatformClient:
    def __init__(self, http: httpx.AsyncClient, stack: Stack) -> None:
        self.http = http
        self.stack = stack

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.stack.admin_token}"}

    async def tenant(self, name: str = "acme") -> Tenant:
        """A new project and a token with every scope."""
        project = await self.http.post("/projects", json={"name": name}, headers=self.admin)
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        body = {"name": "ci", "scopes": ["read", "write", "admin"]}
        token = await self.http.post(f"/projects/{project_id}/tokens", json=body, headers=self.admin)
        assert token.status_code == 201, token.text
        return Tenant(project_id, token.json()["token"])

    async def create_database(self, tenant: Tenant, name: str, *, key: str | None = None) -> dict[str, Any]:
        headers = tenant.headers | ({"Idempotency-Key": key} if key else {})
        response = await self.http.post(
            "/databases", json={"project_id": tenant.project_id, "name": name}, headers=headers
        )
        assert response.status_code == 202, response.text
        accepted: dict[str, Any] = response.json()
        return accepted

    async def wait(self, tenant: Tenant, operation_id: str, *, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.0, min(deadline - time.monotonic(), 10.0))
            response = await self.http.get(
                f"/operations/{operation_id}", params={"wait": round(wait, 3)}, headers=tenant.headers
            )
            assert response.status_code == 200, response.text
            operation: dict[str, Any] = response.json()
            if operation["status"] in TERMINAL:
                return operation
            assert time.monotonic() < deadline, (
                f"operation still {operation['status']}: {operation}\n"
                f"agent log:\n{self.stack.log_tail('agent')}\nprojector log:\n{self.stack.log_tail('projector')}"
            )

    async def wait_steps(self, tenant: Tenant, operation_id: str) -> list[dict[str, Any]]:
        """The steps an operation has completed so far."""
        response = await self.http.get(f"/operations/{operation_id}", headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [s for s in response.json()["steps"] if s["status"] == "completed"]

    async def succeeded(self, tenant: Tenant, operation_id: str) -> dict[str, Any]:
        operation = await self.wait(tenant, operation_id)
        assert operation["status"] == "succeeded", operation
        return operation

    async def credentials(self, tenant: Tenant, database_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/databases/{database_id}/credentials", headers=tenant.headers)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def host_has(self, dbname: str, role: str) -> tuple[int, int]:
        """How many databases named ``dbname`` and roles named ``role`` exist on the data host."""
        with psycopg.connect(self.stack.cluster.superuser_dsn()) as conn:
            dbs = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            roles = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        assert dbs is not None and roles is not None
        return dbs[0], roles[0]

    def routed(self, dbname: str) -> bool:
        return dbname in (self.stack.pgbouncer_dir / "databases.ini").read_text()


def new_key() -> str:
    return str(uuid.uuid4())
