"""ID token validation: a token is believed only when one of the provider's keys signed it, for
this client, from this issuer, not expired, carrying this sign-in's nonce."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from api.usecases.oidc import SignInRefused, safe_next, validate_id_token

ISSUER, CLIENT, NONCE = "https://id.example.com", "pgplane", "n-0S6_WzA2Mj"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
JWKS: dict[str, Any] = dict(KeySet([KEY]).as_dict(private=False))


def token(key: Any = KEY, alg: str = "RS256", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "248289761001", "iat": now, "exp": now + 300, "nonce": NONCE}
    claims.update(changes)
    return jwt.encode({"alg": alg, "kid": "k1"}, {k: v for k, v in claims.items() if v is not None}, key)


def validate(id_token: str) -> dict[str, Any]:
    return validate_id_token(id_token, JWKS, issuer=ISSUER, client_id=CLIENT, nonce=NONCE)


def test_a_well_formed_token_is_believed() -> None:
    assert validate(token())["sub"] == "248289761001"
    assert validate(token(aud=[CLIENT, "other"], azp=CLIENT))["sub"] == "248289761001"


@pytest.mark.parametrize(
    "changes",
    [
        {"nonce": "another sign-in"},
        {"nonce": None},
        {"aud": "another-client"},
        {"aud": [CLIENT, "other"]},  # several audiences and no azp naming us
        {"iss": "https://evil.example.com"},
        {"exp": int(time.time()) - 3600},
        {"sub": None},
    ],
)
def test_a_token_with_wrong_claims_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(SignInRefused):
        validate(token(**changes))


def test_a_token_signed_by_another_key_or_a_shared_secret_is_refused() -> None:
    with pytest.raises(SignInRefused):
        validate(token(key=RSAKey.generate_key(2048, parameters={"kid": "k1"})))
    with pytest.raises(SignInRefused):
        validate(token(key=OctKey.generate_key(256, parameters={"kid": "k1"}), alg="HS256"))
    unsigned = token().rsplit(".", 1)[0] + "."
    with pytest.raises(SignInRefused):
        validate(unsigned)


def test_after_sign_in_only_paths_of_this_site() -> None:
    assert safe_next("/api/v1/me?x=1") == "/api/v1/me?x=1"
    for elsewhere in ("https://evil.example.com", "//evil.example.com", "/\\evil.example.com", None, ""):
        assert safe_next(elsewhere) == "/api/v1/me"
