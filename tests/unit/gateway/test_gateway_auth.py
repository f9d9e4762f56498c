"""Bearer tokens at the gateway: every bad token is a 401 that says why and reaches no service;
a good one reaches the service as the gateway's internal token, never as the caller's own."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accrue.identity.internal import load_verifier
from accrue.identity.local_issuer import LocalIssuer
from accrue.identity.policy import load_policy
from accrue.runtime.clock import clock_for
from accrue.testing.identity import KEYS_ENV, person

pytestmark = pytest.mark.unit

PROJECT = "/v1/projects/p-9"
DANA = person("dana", "finance", legal_entities=["le-1"])


def _now() -> dt.datetime:
    return clock_for(dt.datetime.fromisoformat(os.environ["ACCRUE_CLOCK_START"]))()


def _claims(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    now = int(_now().timestamp())
    claims = {
        "iss": issuer.issuer,
        "aud": "accrue",
        "sub": "dana",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "roles": ["finance"],
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _es256(issuer: LocalIssuer, claims: dict[str, Any], kid: str | None = None) -> str:
    key = issuer._keys[issuer.active_kid].private_key
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid or issuer.active_kid})


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(issuer: LocalIssuer) -> dict[str, tuple[str, str]]:
    """name -> (token, the reason the gateway must give)."""
    good = _claims(issuer)
    stranger = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        issuer._keys[issuer.active_kid]
        .private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # HS256 "signed" with the issuer's public key: the classic algorithm-confusion attack.
    head = _b64({"alg": "HS256", "kid": issuer.active_kid, "typ": "JWT"})
    body = _b64(good)
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    valid = _es256(issuer, good)
    h, p, s = valid.split(".")
    flipped = s[:-4] + ("AAAA" if s[-4:] != "AAAA" else "BBBB")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg none": (f"{_b64({'alg': 'none', 'kid': issuer.active_kid})}.{body}.", "bad_algorithm"),
        "HS256 with the public key": (confused, "bad_algorithm"),
        "wrong issuer": (_es256(issuer, _claims(issuer, iss="https://evil.example")), "wrong_issuer"),
        "wrong audience": (_es256(issuer, _claims(issuer, aud="another-app")), "wrong_audience"),
        "expired": (_es256(issuer, _claims(issuer, exp=int(_now().timestamp()) - 3600)), "expired"),
        "nbf in the future": (
            _es256(issuer, _claims(issuer, nbf=int(_now().timestamp()) + 3600)),
            "not_yet_valid",
        ),
        "unknown kid": (
            jwt.encode(good, stranger, algorithm="ES256", headers={"kid": "not-published"}),
            "unknown_key",
        ),
        "bad signature": (f"{h}.{p}.{flipped}", "bad_signature"),
        "signed by another key": (
            jwt.encode(good, stranger, algorithm="ES256", headers={"kid": issuer.active_kid}),
            "bad_signature",
        ),
        # An RS256 token naming an EC key: the key's algorithm does not match the token's.
        "RS256 naming an EC key": (
            jwt.encode(good, rsa_key, algorithm="RS256", headers={"kid": issuer.active_kid}),
            "bad_algorithm",
        ),
        "malformed": ("not-a-jwt", "malformed"),
    }


async def test_without_a_token_the_answer_is_401_with_a_bearer_challenge(
    make_client: Any, recorder: Any
) -> None:
    client = make_client(auth=None)

    response = await client.get(PROJECT)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="accrue"'
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reason"] == "MISSING"
    assert recorder.calls == []


async def test_every_bad_token_is_401_naming_the_reason_and_reaches_no_service(
    make_client: Any, recorder: Any, issuer: Any
) -> None:
    client = make_client(auth=None)

    for name, (token, reason) in _bad_tokens(issuer.issuer).items():
        response = await client.get(PROJECT, headers={"Authorization": f"Bearer {token}"})

        assert response.status_code == 401, (name, response.text)
        challenge = response.headers["www-authenticate"]
        assert f'error_description="{reason}"' in challenge, (name, challenge)
        assert 'error="invalid_token"' in challenge
        assert response.json()["reason"] == reason.upper(), name
        assert token not in response.text, f"{name}: the token was echoed"
    assert recorder.calls == []


async def test_a_good_token_reaches_the_service_as_the_gateways_internal_token(
    make_client: Any, recorder: Any, issuer: Any
) -> None:
    client = make_client(auth=None)
    token = issuer.tokens.token(DANA)

    response = await client.get(PROJECT, headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200, response.text
    forwarded = recorder.last("GetProject").metadata["authorization"]
    assert token not in forwarded
    clock = clock_for(dt.datetime.fromisoformat(os.environ["ACCRUE_CLOCK_START"]))
    assert load_verifier(Path(os.environ[KEYS_ENV]), clock).principal(forwarded) == DANA


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs", "/metrics"])
async def test_operational_routes_need_no_token(make_client: Any, path: str) -> None:
    assert (await make_client(auth=None).get(path)).status_code == 200


async def test_metrics_can_be_closed(make_client: Any, issuer: Any) -> None:
    client = make_client(auth=None, metrics_open=False)

    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=issuer.tokens.headers(DANA))).status_code == 200


async def test_the_openapi_document_declares_bearer_and_oidc_and_each_operations_roles(
    make_client: Any,
) -> None:
    document = (await make_client(auth=None).get("/openapi.json")).json()
    policy = load_policy()

    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        **schemes["bearer"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert schemes["oidc"]["openIdConnectUrl"].endswith("/local-issuer/.well-known/openid-configuration")
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations
    for operation in operations:
        assert {"bearer": []} in operation["security"]
        assert operation["x-accrue-roles"], operation["operationId"]
    approve = next(op for op in operations if op["operationId"] == "ApproveTimeEntry")
    expected = policy.entries["accrue.timekeeping.v1.TimekeepingService/ApproveTimeEntry"].roles
    assert set(approve["x-accrue-roles"]) == expected
    assert "Roles:" in approve["description"]


async def test_a_provider_whose_keys_cannot_be_fetched_is_503_not_401(
    make_client: Any, recorder: Any, issuer: Any, closed_port: int
) -> None:
    unreachable = f"http://127.0.0.1:{closed_port}/realms/acme"
    async with httpx.AsyncClient(timeout=1) as http:
        client = make_client(build_kwargs={"http": http}, auth=None, oidc_issuer=unreachable)
        token = _es256(issuer.issuer, _claims(issuer.issuer, iss=unreachable))

        response = await client.get(PROJECT, headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 503
    assert response.json()["reason"] == "PROVIDER_UNAVAILABLE"
    assert recorder.calls == []


async def test_a_subject_that_is_an_hr_worker_id_acts_as_that_consultant(
    make_client: Any, recorder: Any, issuer: Any
) -> None:
    client = make_client(auth=None, subject_mapping="external_ref:workday")
    worker = issuer.tokens.token(person("W-42", "consultant", legal_entities=["le-1"]))
    stranger = issuer.tokens.token(person("W-99", "finance"))

    for token in (worker, worker, stranger):
        response = await client.get(PROJECT, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text

    clock = clock_for(dt.datetime.fromisoformat(os.environ["ACCRUE_CLOCK_START"]))
    verifier = load_verifier(Path(os.environ[KEYS_ENV]), clock)
    seen = [
        verifier.principal(c.metadata["authorization"]).subject
        for c in recorder.calls
        if c.method == "GetProject"
    ]
    assert seen == ["c-42", "c-42", "W-99"]  # mapped; remembered; no consultant: the subject stays
    lookups = [c for c in recorder.calls if c.method == "ListConsultants"]
    assert len(lookups) == 2  # once per subject, then remembered
    assert verifier.principal(lookups[0].metadata["authorization"]).subject == "service:gateway"
