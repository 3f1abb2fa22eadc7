"""Sign-in through an OpenID Connect provider, against a real one running on this machine
(``oidc-provider-mock``): the authorization code flow with state, nonce and PKCE, the ID token
checked against the provider's keys; a new person gets an account, a known verified email is
linked to its account, and an answer that does not belong to the sign-in changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import psycopg
import pytest

from devstack.cluster import Cluster
from devstack.stack import Stack
from infra.sessions import COOKIE
from tests.servers import local_server
from tests.stacks import new_stack

LOGIN_COOKIE = "__Host-pgplane_oidc"


@pytest.fixture(scope="module")
def provider(cluster: Cluster) -> Iterator[str]:
    args = ("--port", "{port}", "--require-nonce")
    with local_server(cluster, "the OpenID Connect provider", "oidc_provider_mock", *args) as url:
        yield url


@pytest.fixture(scope="module")
def stack(cluster: Cluster, provider: str) -> Iterator[Stack]:
    env = {
        "PGPLANE_OIDC_ISSUER": provider,
        "PGPLANE_OIDC_CLIENT_ID": "pgplane",
        "PGPLANE_OIDC_CLIENT_SECRET": "a client secret",
    }
    platform = new_stack(cluster, env, processes=("api",))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


def person_at_provider(provider: str, subject: str, claims: dict[str, object]) -> None:
    """What the provider knows of the person (its test API)."""
    assert httpx.put(f"{provider}/users/{quote(subject)}", json=claims).status_code == 204


def approve_at_provider(authorize: str, subject: str) -> str:
    """What the person does on the provider's page: sign in as ``subject``; where it sends them back."""
    approved = httpx.post(authorize, data={"sub": subject})
    assert approved.status_code == 302, approved.text
    return approved.headers["location"]


async def sign_in(web: httpx.AsyncClient, provider: str, subject: str, claims: dict[str, object]) -> httpx.Response:
    """Leave for the provider, sign in there as ``subject``, and come back: the callback's answer."""
    person_at_provider(provider, subject, claims)
    started = await web.get("/auth/oidc/login", params={"next": "/api/v1/me"})
    assert started.status_code == 302, started.text
    login_cookie = started.cookies[LOGIN_COOKIE]
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    assert query["redirect_uri"] == [f"{str(web.base_url).rstrip('/')}/auth/oidc/callback"]
    back = approve_at_provider(authorize, subject)
    assert back.startswith(f"{str(web.base_url).rstrip('/')}/auth/oidc/callback?")
    return await web.get(back, headers={"Cookie": f"{LOGIN_COOKIE}={login_cookie}"})


async def test_a_provider_signs_in_new_and_known_people(stack: Stack, provider: str) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as web:
        known = await web.post(
            "/api/v1/auth/sign-up",
            json={"email": "grace@example.com", "password": "correct horse battery", "name": "Grace"},
        )
        assert known.status_code == 201
        claims = {"email": "Grace@example.com", "email_verified": True, "name": "Grace H."}
        back = await sign_in(web, provider, "grace-at-provider", claims)
        assert back.status_code == 302 and back.headers["location"] == "/api/v1/me", back.text
        me = await web.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={back.cookies[COOKIE]}"})
        assert me.status_code == 200 and me.json()["user"]["id"] == known.json()["user"]["id"]  # linked

        again = await sign_in(web, provider, "grace-at-provider", claims)  # known by its subject now
        me = await web.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={again.cookies[COOKIE]}"})
        assert me.json()["user"]["id"] == known.json()["user"]["id"]

        new = await sign_in(web, provider, "heidi-at-provider", {"email": "heidi@example.com", "name": "Heidi"})
        me = await web.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={new.cookies[COOKIE]}"})
        assert me.status_code == 200 and me.json()["user"]["email"] == "heidi@example.com"
        password = await web.post(
            "/api/v1/auth/sign-in", json={"email": "heidi@example.com", "password": "anything at all"}
        )
        assert password.status_code == 401  # an account made by the provider has no password


async def test_an_answer_that_is_not_this_sign_ins_changes_nothing(stack: Stack, provider: str) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as web:
        person_at_provider(provider, "mallory", {"email": "mallory@example.com"})
        first = await web.get("/auth/oidc/login")
        second = await web.get("/auth/oidc/login")
        back = approve_at_provider(second.headers["location"], "mallory")
        swapped = await web.get(back, headers={"Cookie": f"{LOGIN_COOKIE}={first.cookies[LOGIN_COOKIE]}"})
        assert swapped.status_code == 400 and "state" in swapped.text
        assert COOKIE not in swapped.headers.get("set-cookie", "")
        sealed = second.cookies[LOGIN_COOKIE]
        forged = await web.get(back, headers={"Cookie": f"{LOGIN_COOKIE}={'0' * 8}{sealed[8:]}"})
        assert forged.status_code == 400
        assert (await web.get(back)).status_code == 400  # no sign-in was started in this browser

        # an unverified address that an account already has is not linked to it
        await web.post(
            "/api/v1/auth/sign-up", json={"email": "ivan@example.com", "password": "correct horse battery", "name": "I"}
        )
        taken = await sign_in(web, provider, "not-ivan", {"email": "ivan@example.com", "email_verified": False})
        assert taken.status_code == 400 and "verified" in taken.text
    with psycopg.connect(stack.cluster.superuser_dsn(stack.meta_db)) as conn:
        subjects = {row[0] for row in conn.execute("SELECT subject FROM user_identities")}
    assert "mallory" not in subjects and "not-ivan" not in subjects
