"""Sign-in through an OpenID Connect provider: the authorization code flow with PKCE, its state and
nonce checked, and the ID token validated against the provider's published keys (JWKS).

The provider is found by its issuer URL (discovery, ``/.well-known/openid-configuration``). The
login's state, nonce and PKCE verifier travel in a short-lived cookie sealed with the platform's
secret key (AES-GCM): nothing is stored until the provider vouches for the user. A user is found
by (issuer, subject); the first time, by a verified email the provider gives, else created.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.metadata.tables import IDENTITIES, USERS
from infra.secrets import SecretBox
from infra.settings import Settings

LOGIN_SECONDS = 600
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
"""Asymmetric only: an ID token is checked with the provider's public keys, never a shared secret,
and never ``none``."""
CONTEXT = "oidc-login"


class SignInRefused(Exception):
    """The provider's answer cannot sign anyone in (the message says why, for the page)."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class Login:
    """What the browser carries between leaving for the provider and coming back."""

    state: str
    nonce: str
    verifier: str
    next: str
    started: float

    def seal(self, box: SecretBox) -> str:
        return box.encrypt(json.dumps(self.__dict__), context=CONTEXT).hex()

    @classmethod
    def open(cls, box: SecretBox, sealed: str) -> Login:
        try:
            return cls(**json.loads(box.decrypt(bytes.fromhex(sealed), context=CONTEXT)))
        except Exception:  # tampered, truncated or from another key: the same answer
            raise SignInRefused("this sign-in was not started here: start again") from None


def safe_next(target: str | None) -> str:
    """Where to land after signing in: a path on this site only (never ``//elsewhere``)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/api/v1/me"


async def discover(http: httpx.AsyncClient, issuer: str) -> Provider:
    response = await http.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
    response.raise_for_status()
    document = response.json()
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise SignInRefused("the provider's discovery document names another issuer")
    return Provider(
        issuer=document["issuer"],
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks_uri=document["jwks_uri"],
    )


def redirect_uri(settings: Settings) -> str:
    return f"{settings.base_url()}/auth/oidc/callback"


def start(settings: Settings, provider: Provider, next_path: str | None) -> tuple[str, Login]:
    """The provider's authorization URL, and the login to remember."""
    login = Login(
        state=secrets.token_urlsafe(24),
        nonce=secrets.token_urlsafe(24),
        verifier=secrets.token_urlsafe(48),
        next=safe_next(next_path),
        started=time.time(),
    )
    challenge = base64.urlsafe_b64encode(hashlib.sha256(login.verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": redirect_uri(settings),
        "scope": "openid email profile",
        "state": login.state,
        "nonce": login.nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{provider.authorization_endpoint}?{urlencode(query)}", login


def check_state(login: Login, state: str | None) -> None:
    if time.time() - login.started > LOGIN_SECONDS:
        raise SignInRefused("this sign-in took too long: start again")
    if not state or not secrets.compare_digest(state, login.state):
        raise SignInRefused("the provider's answer does not belong to this sign-in (state)")


async def exchange(
    http: httpx.AsyncClient, settings: Settings, provider: Provider, login: Login, code: str
) -> dict[str, Any]:
    """The code for tokens, proving with the PKCE verifier that this is the client that started."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(settings),
        "code_verifier": login.verifier,
        "client_id": settings.oidc_client_id,
    }
    secret = settings.oidc_client_secret
    if secret is None:
        response = await http.post(provider.token_endpoint, data=form)
    else:  # client_secret_basic, what providers default to
        response = await http.post(
            provider.token_endpoint, data=form, auth=(settings.oidc_client_id, secret.get_secret_value())
        )
    if response.status_code != 200:
        raise SignInRefused(f"the provider refused the code ({response.status_code})")
    tokens: dict[str, Any] = response.json()
    if "id_token" not in tokens:
        raise SignInRefused("the provider sent no ID token")
    return tokens


def validate_id_token(
    id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str, now: int | None = None
) -> dict[str, Any]:
    """The ID token's claims, once its signature (by one of the provider's keys), issuer, audience,
    expiry and nonce are right (OpenID Connect Core 1.0, section 3.1.3.7)."""
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=ALGORITHMS)  # type: ignore[arg-type]
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=60,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        registry.validate(token.claims)
    except (JoseError, ValueError) as error:
        raise SignInRefused(f"the ID token is not valid: {error}") from None
    claims = dict(token.claims)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise SignInRefused("the ID token was issued to another client (azp)")
    return claims


async def user_for(conn: AsyncConnection, settings: Settings, issuer: str, claims: dict[str, Any]) -> uuid.UUID:
    """The user these claims name: known by (issuer, subject); else the account with the same
    verified email; else a new account (when sign-up is open)."""
    subject = str(claims["sub"])
    known = (
        await conn.execute(
            sa.select(IDENTITIES.c.user_id).where(IDENTITIES.c.issuer == issuer, IDENTITIES.c.subject == subject)
        )
    ).scalar_one_or_none()
    if known is not None:
        return uuid.UUID(str(known))
    email = str(claims.get("email") or "").lower()
    if not email or claims.get("email_verified") is False:
        raise SignInRefused("the provider gave no verified email address for this account")
    user_id = (await conn.execute(sa.select(USERS.c.id).where(USERS.c.email == email))).scalar_one_or_none()
    if user_id is not None and claims.get("email_verified") is not True:
        raise SignInRefused("an account has this email: the provider must say it verified it to link them")
    now = datetime.now(UTC)
    if user_id is None:
        if not settings.signup:
            raise SignInRefused("this platform creates accounts by invitation only")
        user_id = uuid.uuid4()
        name = str(claims.get("name") or email.split("@")[0])[:100]
        await conn.execute(
            sa.insert(USERS).values(
                id=user_id, email=email, name=name, password_hash=None, platform_admin=False, created_at=now
            )
        )
    await conn.execute(
        insert(IDENTITIES)
        .values(issuer=issuer, subject=subject, user_id=user_id, created_at=now)
        .on_conflict_do_nothing()
    )
    return user_id
