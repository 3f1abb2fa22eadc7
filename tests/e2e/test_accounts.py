"""Accounts, end to end: sign up, an organization and its project, an invitation read from the mail
outbox and accepted, roles enforced per project (a viewer reads and may not create; promoted to
developer, creates), another organization's project is a 404, session writes need the CSRF token,
the last owner stays, and every membership change is in the organization's audit log. The admin
API's searches, and a platform administrator made by an operator. And the CLI's device flow
(RFC 8628), polled as a CLI polls: pending, slow_down, approval on the device page, one token,
denial, expiry."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import psycopg

from devstack.stack import Stack
from infra.sessions import COOKIE
from tests.platform_client import PlatformClient
from tests.stacks import shared_stack

PASSWORD = "correct horse battery staple"
GRANT = "urn:ietf:params:oauth:grant-type:device_code"


stack = shared_stack({"PGPLANE_DEVICE_POLL_SECONDS": "1"})  # each test has its own users and organizations


class User:
    """A browser: the session cookie (Secure, so sent by hand over the test's plain HTTP) and the
    CSRF token that goes with it."""

    def __init__(self, http: httpx.AsyncClient, signed_in: httpx.Response) -> None:
        assert signed_in.status_code in (200, 201), signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie, cookie
        self.http = http
        self.cookie = {"Cookie": f"{COOKIE}={signed_in.cookies[COOKIE]}"}
        self.csrf = signed_in.json()["csrf_token"]
        self.id = signed_in.json()["user"]["id"]

    @property
    def writes(self) -> dict[str, str]:
        return self.cookie | {"X-CSRF-Token": self.csrf}

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path, headers=self.cookie)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.writes)


def grant_platform_admin(stack: Stack, email: str) -> None:
    """What an operator runs: ``pgplane ops platform-admin grant EMAIL``."""
    granted = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "ops", "platform-admin", "grant", email],
        env=stack.env("operator"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert granted.returncode == 0, granted.stderr


async def sign_up(client: PlatformClient, email: str, name: str) -> User:
    body = {"email": email, "password": PASSWORD, "name": name}
    return User(client.http, await client.http.post("/auth/sign-up", json=body))


async def eventually(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_an_organization_invites_a_member_whose_role_decides_what_they_may_do(client: PlatformClient) -> None:
    alice = await sign_up(client, "Alice@Example.com", "Alice")
    taken = await client.http.post(
        "/auth/sign-up", json={"email": "alice@example.com", "password": PASSWORD, "name": "A"}
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_taken"
    wrong = await client.http.post("/auth/sign-in", json={"email": "alice@example.com", "password": "wrong password"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    again = User(
        client.http, await client.http.post("/auth/sign-in", json={"email": "alice@example.com", "password": PASSWORD})
    )
    assert again.id == alice.id

    forged = await client.http.post("/orgs", json={"name": "Acme"}, headers=alice.cookie)  # no CSRF token
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    org = await alice.post("/orgs", {"name": "Acme"})
    assert org.status_code == 201 and org.json()["role"] == "owner", org.text
    org_id = org.json()["id"]
    project = await alice.post("/projects", {"name": "web", "organization_id": org_id})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    assert await eventually(lambda: _status(alice.get(f"/projects/{project_id}"), 200))

    invited = await alice.post(f"/orgs/{org_id}/invitations", {"email": "bob@example.com", "role": "viewer"})
    assert invited.status_code == 201 and invited.json()["status"] == "pending", invited.text
    mail = (await client.http.get("/admin/mail?recipient=bob@example.com", headers=client.admin)).json()["data"]
    assert len(mail) == 1 and "Acme" in mail[0]["subject"]
    token = re.search(r"\"token\": \"([0-9a-f]{32}\.[A-Za-z0-9_-]+)\"", mail[0]["body"]).group(1)  # type: ignore[union-attr]

    bob = await sign_up(client, "bob@example.com", "Bob")
    carol = await sign_up(client, "carol@example.com", "Carol")
    stolen = await carol.post("/invitations/accept", {"token": token})
    assert stolen.status_code == 403 and stolen.json()["error"]["code"] == "invitation_for_another_user"
    accepted = await bob.post("/invitations/accept", {"token": token})
    assert accepted.status_code == 200 and accepted.json()["role"] == "viewer", accepted.text
    reused = await bob.post("/invitations/accept", {"token": token})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "invitation_accepted"

    # a viewer reads and may not create; another organization's user sees nothing
    refused = await bob.post("/databases", {"project_id": project_id, "name": "app"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope", refused.text
    assert (await bob.get(f"/databases?project_id={project_id}")).json()["data"] == []
    assert [p["id"] for p in (await bob.get("/projects")).json()["data"]] == [project_id]
    for path in (f"/projects/{project_id}", f"/orgs/{org_id}", f"/databases?project_id={project_id}"):
        assert (await carol.get(path)).status_code == 404, path
    assert (await carol.get("/projects")).json()["data"] == []
    assert (await carol.get("/databases")).json()["data"] == []
    made = await bob.post(f"/orgs/{org_id}/invitations", {"email": "dan@example.com", "role": "viewer"})
    assert made.status_code == 403 and made.json()["error"]["code"] == "insufficient_role"

    # promoted, the member creates; the last owner stays
    role = await client.http.patch(f"/orgs/{org_id}/members/{bob.id}", json={"role": "developer"}, headers=alice.writes)
    assert role.status_code == 200 and role.json()["role"] == "developer", role.text
    created = await bob.post("/databases", {"project_id": project_id, "name": "app"})
    assert created.status_code == 202, created.text
    operation_id = created.json()["operation"]["id"]
    done = await eventually(lambda: _terminal(bob, operation_id), timeout=90)
    assert done == "succeeded"
    demoted = await client.http.patch(
        f"/orgs/{org_id}/members/{alice.id}", json={"role": "admin"}, headers=alice.writes
    )
    assert demoted.status_code == 409 and demoted.json()["error"]["code"] == "last_owner"
    members = (await alice.get(f"/orgs/{org_id}/members")).json()["data"]
    assert {(m["email"], m["role"]) for m in members} == {
        ("alice@example.com", "owner"),
        ("bob@example.com", "developer"),
    }

    async def audited() -> list[str]:
        entries = (await alice.get(f"/audit-log?organization_id={org_id}")).json()["data"]
        actions = sorted(e["action"] for e in entries)
        return actions if len(actions) >= 4 else []

    expected = ["member.add", "member.invite", "member.role_change", "organization.create"]
    assert await eventually(audited) == expected
    assert (await bob.get(f"/audit-log?organization_id={org_id}")).status_code == 403

    signed_out = await client.http.post("/auth/sign-out", headers=alice.writes)
    assert signed_out.status_code == 204
    assert (await alice.get("/me")).status_code == 401


async def _status(response: Any, status: int) -> bool:
    return bool((await response).status_code == status)


async def _terminal(user: User, operation_id: str) -> str | None:
    status: str = (await user.get(f"/operations/{operation_id}")).json()["status"]
    return status if status in ("succeeded", "failed", "compensated") else None


async def test_the_cli_signs_in_with_the_device_flow(client: PlatformClient, stack: Stack) -> None:
    oauth = httpx.AsyncClient(base_url=stack.api_url, timeout=30)
    metadata = (await oauth.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["device_authorization_endpoint"].endswith("/oauth/device/code")
    assert metadata["grant_types_supported"] == [GRANT]

    unknown = await oauth.post("/oauth/device/code", data={"client_id": "someone-else"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    started = await oauth.post("/oauth/device/code", data={"client_id": "pgplane-cli", "scope": "read write"})
    assert started.status_code == 200 and started.headers["cache-control"] == "no-store", started.text
    code = started.json()
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", code["user_code"])
    assert code["verification_uri_complete"].endswith(f"/device?user_code={code['user_code']}")
    assert code["interval"] == 1 and code["expires_in"] == 900

    async def poll(device_code: str) -> httpx.Response:
        return await oauth.post(
            "/oauth/token", data={"grant_type": GRANT, "device_code": device_code, "client_id": "pgplane-cli"}
        )

    first = await poll(code["device_code"])
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    hurried = await poll(code["device_code"])
    assert hurried.status_code == 400 and hurried.json()["error"] == "slow_down"  # and the interval is now 6 s
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        assert conn.execute("SELECT interval_seconds FROM device_authorizations").fetchone() == (6,)

    erin = await sign_up(client, "erin@example.com", "Erin")
    page = await oauth.get(f"/device?user_code={code['user_code']}", headers=erin.cookie)
    assert page.status_code == 200 and erin.csrf in page.text and code["user_code"] in page.text
    forged = await oauth.post(
        "/device", data={"user_code": code["user_code"], "action": "approve"}, headers=erin.cookie
    )
    assert forged.status_code == 403
    form = {"user_code": code["user_code"].lower().replace("-", " "), "action": "approve", "csrf_token": erin.csrf}
    approved = await oauth.post("/device", data=form, headers=erin.cookie)
    assert approved.status_code == 200 and "Approved" in approved.text

    issued = await poll(code["device_code"])
    assert issued.status_code == 200, issued.text
    token = issued.json()
    assert token["token_type"] == "Bearer" and token["scope"] == "read write"
    me = await client.http.get("/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200 and me.json()["user"]["email"] == "erin@example.com"
    assert (await poll(code["device_code"])).json()["error"] == "invalid_grant"  # once

    denied_code = (await oauth.post("/oauth/device/code", data={"client_id": "pgplane-cli"})).json()
    form = {"user_code": denied_code["user_code"], "action": "deny", "email": "erin@example.com", "password": PASSWORD}
    denied = await oauth.post("/device", data=form)  # signed in with the form itself
    assert denied.status_code == 200 and "Denied" in denied.text
    assert (await poll(denied_code["device_code"])).json()["error"] == "access_denied"

    old = (await oauth.post("/oauth/device/code", data={"client_id": "pgplane-cli"})).json()
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:  # its 15 minutes pass
        conn.execute("UPDATE device_authorizations SET expires_at = now() WHERE status = 'pending'")
    assert (await poll(old["device_code"])).json()["error"] == "expired_token"
    late = {"user_code": old["user_code"], "action": "approve", "csrf_token": erin.csrf}
    assert (await oauth.post("/device", data=late, headers=erin.cookie)).status_code == 404
    await oauth.aclose()


async def test_the_admin_api_searches_across_tenants_and_an_operator_makes_a_platform_admin(
    client: PlatformClient, stack: Stack
) -> None:
    frank = await sign_up(client, "frank@example.com", "Frank Admin")
    org_id = (await frank.post("/orgs", {"name": "Frankly"})).json()["id"]
    project_id = (await frank.post("/projects", {"name": "site", "organization_id": org_id})).json()["id"]
    other = await client.tenant("elsewhere")  # a project in no organization, made with the admin token

    async def found() -> list[dict[str, Any]]:
        listed = await client.http.get("/admin/organizations", params={"q": "FRANK"}, headers=client.admin)
        data: list[dict[str, Any]] = listed.json()["data"]
        return data if data and data[0]["projects"] == 1 else []

    assert [(o["id"], o["members"], o["projects"]) for o in await eventually(found)] == [(org_id, 1, 1)]
    users = (await client.http.get("/admin/users", params={"q": "frank@"}, headers=client.admin)).json()
    assert [u["email"] for u in users["data"]] == ["frank@example.com"]
    projects = await client.http.get("/admin/projects", params={"organization_id": org_id}, headers=client.admin)
    assert [p["id"] for p in projects.json()["data"]] == [project_id]
    for path, params in [
        ("organizations", {"q": "Frank\x00"}),
        ("projects", {"q": "\x00"}),
        ("databases", {"status": "\x00"}),
    ]:
        nul = await client.http.get(f"/admin/{path}", params=params, headers=client.admin)  # no text holds a NUL
        assert (nul.status_code, nul.json()["data"]) == (200, []), nul.text
    usage = (await frank.get(f"/orgs/{org_id}/usage")).json()
    assert (usage["projects"], usage["databases"], usage["storage_bytes"]) == (1, 0, 0)

    assert (await frank.get("/admin/users")).status_code == 403
    assert (await frank.get(f"/projects/{other.project_id}")).status_code == 404
    grant_platform_admin(stack, "Frank@example.com")
    assert (await frank.get("/admin/users")).status_code == 200
    assert (await frank.get(f"/projects/{other.project_id}")).status_code == 200
    upgraded = await client.http.post(
        f"/admin/projects/{other.project_id}/plan", json={"plan": "pro"}, headers=frank.writes
    )
    assert upgraded.status_code == 200 and upgraded.json()["plan"] == "pro"
    own = await client.http.post(f"/admin/projects/{project_id}/plan", json={"plan": "pro"}, headers=frank.writes)
    assert own.status_code == 409 and own.json()["error"]["code"] == "plan_of_organization"
    assert (await frank.get(f"/projects/{project_id}")).json()["plan"] == "free"
    organization = await frank.post(f"/admin/organizations/{org_id}/plan", {"plan": "pro"})
    assert organization.status_code == 200 and organization.json()["plan"] == "pro"
    assert (await frank.get(f"/projects/{project_id}")).json()["plan"] == "pro"  # at once, for all its projects

    async def audited() -> list[str]:
        entries = (await client.http.get(f"/audit-log?project_id={other.project_id}", headers=client.admin)).json()
        return [e["actor"] for e in entries["data"] if e["action"] == "project.plan_change"]

    assert await eventually(audited) == [f"user:{frank.id}"]


async def test_a_signed_in_browser_is_throttled_with_its_address(client: PlatformClient) -> None:
    """The throttle is read with the session in one statement; a right session from an address
    that guessed wrong ten times is refused like a right token."""
    frank = await sign_up(client, f"frank-{uuid.uuid4().hex[:8]}@example.com", "Frank")
    address = {"X-Forwarded-For": "198.51.100.23"}
    wrong = address | {"Authorization": "Bearer pgp_" + "0" * 32 + "_" + "x" * 43 + "_000000"}
    assert [(await client.http.get("/projects", headers=wrong)).status_code for _ in range(10)] == [401] * 10
    throttled = await client.http.get("/projects", headers=address | frank.cookie)
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too_many_failed_attempts"
    assert (await frank.get("/projects")).status_code == 200  # from its own address
