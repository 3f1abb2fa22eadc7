"""Hostile input gets a clean, specific JSON error with a request id, changes nothing, and costs
the API nothing: oversized bodies before authentication, wrong content types, broken JSON and
broken HTTP, control characters, loosely typed values, and internal detail kept from tenants."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from devstack.stack import Stack
from tests.platform_client import PlatformClient, new_key
from tests.stacks import shared_stack

stack = shared_stack()  # each test works in projects of its own, and restarts what it stops


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (status, response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"], error
    assert response.headers.get("x-request-id", error["request_id"]) == error["request_id"]
    return error


async def test_a_50_mb_body_without_a_token_is_refused_while_it_streams(client: PlatformClient, stack: Stack) -> None:
    api = stack.procs["api"].pid
    before = rss_kb(api)

    async def fifty_megabytes() -> Any:
        for _ in range(50):
            yield b"x" * 2**20

    response = await client.http.post(
        "/databases", content=fifty_megabytes(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "body_too_large")
    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=5) as raw:  # refused on its length alone
        raw.sendall(
            b"POST /api/v1/databases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n{"
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 413")
    assert rss_kb(api) - before < 20 * 1024  # the API did not hold the body


async def test_every_error_is_the_json_object_with_a_specific_code(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    assert_error(await client.http.get("/nowhere", headers=tenant.headers), 404, "route_not_found")
    assert_error(await client.http.put("/databases", headers=tenant.headers), 405, "method_not_allowed")
    wrong_type = await client.http.post(
        "/databases", content=b"project_id=1", headers=tenant.headers | {"content-type": "text/plain"}
    )
    assert_error(wrong_type, 415, "unsupported_media_type")
    broken = await client.http.post(
        "/databases", content=b'{"name": "a" "x"}', headers=tenant.headers | {"content-type": "application/json"}
    )
    error = assert_error(broken, 422, "invalid_request")
    assert "not valid JSON" in error["message"] and "character 13" in error["message"]
    given = await client.http.get("/nowhere", headers=tenant.headers | {"x-request-id": "trace-42"})
    assert given.json()["error"]["request_id"] == "trace-42"

    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=5) as raw:  # broken HTTP
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):  # the server closes the connection after a 400: read it all
            answer += chunk
    head, _, body = answer.decode(errors="replace").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head
    assert '"code": "bad_http_request"' in body


async def test_loose_values_and_control_characters_are_refused(client: PlatformClient, stack: Stack) -> None:
    admin = client.admin
    for name in ("a\x00b", "tab\tname", "line\nbreak", "\x7f"):
        assert_error(await client.http.post("/projects", json={"name": name}, headers=admin), 422, "invalid_request")
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "app")
    await client.succeeded(tenant, accepted["operation"]["id"])
    policy = f"/databases/{accepted['database']['id']}/backup-policy"
    for body in (
        {"schedule": "daily", "retain_days": "7"},
        {"schedule": "daily", "retain_days": True},
        {"schedule": "daily", "retain_days": 7.5},
        {},  # no schedule: nothing is switched on by default
    ):
        assert_error(await client.http.put(policy, json=body, headers=tenant.headers), 422, "invalid_request")
    # JSON Schema's integer: 30.0 is 30
    whole = await client.http.put(policy, json={"schedule": "daily", "retain_days": 30.0}, headers=tenant.headers)
    assert whole.status_code == 200 and whole.json()["retain_days"] == 30
    restore = f"/databases/{accepted['database']['id']}/restore"
    for moment in (1764000000, "1764000000", "2026-11-25T10:42:07", "2026-11-25"):
        moment_body: dict[str, object] = {"point_in_time": moment, "target": "in_place"}
        response = await client.http.post(restore, json=moment_body, headers=tenant.headers)
        assert_error(response, 422, "invalid_request")
    listed = (await client.http.get("/projects", headers=admin)).json()
    assert all("\x00" not in p["name"] for p in listed["data"])


async def test_tenants_read_errors_in_product_terms_and_admins_the_detail(client: PlatformClient, stack: Stack) -> None:
    tenant = await client.tenant()
    stack.stop_process("pgbouncer")  # every route change now fails: the create is dead-lettered
    try:
        accepted = await client.create_database(tenant, "doomed")
        operation = await client.wait(tenant, accepted["operation"]["id"], timeout=120)
    finally:
        stack.start_process("pgbouncer")
    assert operation["status"] == "failed" and operation["error_detail"] is None
    shown = str(operation)
    for internal in (
        str(stack.pgbouncer_port),
        str(stack.cluster.pg_port),
        "127.0.0.1",
        accepted["database"]["dbname"],
    ):
        assert internal not in shown, internal
    as_admin = (await client.http.get(f"/operations/{accepted['operation']['id']}", headers=client.admin)).json()
    assert as_admin["error_detail"] and str(stack.pgbouncer_port) in as_admin["error_detail"]
    assert as_admin["error"] == operation["error"]


async def test_credentials_are_never_cached_and_their_reads_audited(client: PlatformClient) -> None:
    tenant = await client.tenant()
    accepted = await client.create_database(tenant, "app", key=new_key())
    await client.succeeded(tenant, accepted["operation"]["id"])
    response = await client.http.get(f"/databases/{accepted['database']['id']}/credentials", headers=tenant.headers)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    audit = (await client.http.get("/audit-log", headers=tenant.headers)).json()["data"]
    reads = [e for e in audit if e["action"] == "database.credentials_read"]
    assert len(reads) == 1 and reads[0]["actor"].startswith("token:")
    assert response.json()["password"] not in str(audit)
    metrics = f"{client.stack.api_url}/metrics"
    assert (await client.http.get(metrics, headers=tenant.headers)).status_code == 403  # it spans tenants
    assert (await client.http.get(metrics)).status_code == 401
    assert (await client.http.get(metrics, headers=client.admin)).status_code == 200
