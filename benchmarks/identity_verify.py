"""Micro-benchmark: what identity costs per request, with a warm JWKS (issue 12: <= 1 ms p50).

    .venv/bin/python benchmarks/identity_verify.py [--iterations 5000]

One process, one call at a time, each timed alone (perf_counter_ns); p50/p90/p99 in microseconds.
What a request pays, in the order it pays it:

1. the gateway verifies the caller's OIDC access token: `TokenVerifier.verify` (header, kid
   lookup in the cached JWKS, signature, iss/aud/exp/nbf/iat on the clock) and
   `ClaimsMapping.principal`. Two tokens: ES256 from the embedded local issuer (what `make run`
   uses) and RS256 with a 2048-bit key and Keycloak-shaped claims (`realm_access.roles`, `azp`),
   what most providers sign with by default. Both JWKS are served in-process over an ASGI
   transport and fetched once before timing: the steady state, warm JWKS, nothing on the network.
   The gateway keeps no cache of verified bearer tokens, so every request pays this in full;
2. the gateway signs the internal token for that principal (`InternalSigner.token`): cached (the
   same caller again within a minute, the common case) and uncached (a new caller, or a minute
   gone: one ES256 signature);
3. the service verifies the internal token (`InternalVerifier.principal`): cached (a token it has
   seen, the common case) and uncached (a new token: one ES256 verification).

The totals add the p50s: steady state (1 + 2 cached + 3 cached) and a caller's first request
(1 + 2 uncached + 3 uncached). A call that crosses services (e.g. timekeeping reading master
data) adds one more 2 and 3 for the service's own token, both cached after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from accrue.identity.internal import ensure_keys, load_signer, load_verifier
from accrue.identity.local_issuer import LOCAL_ISSUER_PATH, LocalIssuer
from accrue.identity.principal import ClaimsMapping
from accrue.identity.verifier import DISCOVERY_PATH, TokenVerifier, VerifierConfig
from accrue.runtime.clock import system_clock
from accrue.runtime.identity import Principal

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timekeeping_common import percentile, say

TARGET_P50_US = 1000.0
AUDIENCE = "accrue"
GATEWAY_URL = "http://gateway.bench"
RSA_ISSUER = "http://keycloak.bench/realms/accrue"
ROLES = ["consultant", "approver", "project_manager", "finance"]
LEGAL_ENTITIES = [str(uuid.uuid4()) for _ in range(3)]


def local_issuer_app(issuer: LocalIssuer) -> Starlette:
    return Starlette(routes=[Mount(LOCAL_ISSUER_PATH, app=issuer.app())])


class RsaProvider:
    """A Keycloak-like provider: RS256 with a 2048-bit key, discovery and JWKS served as ASGI."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def app(self) -> Starlette:
        async def discovery(_: Request) -> JSONResponse:
            return JSONResponse(
                {"issuer": RSA_ISSUER, "jwks_uri": RSA_ISSUER + "/protocol/openid-connect/certs"}
            )

        async def certs(_: Request) -> JSONResponse:
            return JSONResponse(self.jwks)

        return Starlette(
            routes=[
                Route("/realms/accrue" + DISCOVERY_PATH, discovery),
                Route("/realms/accrue/protocol/openid-connect/certs", certs),
            ]
        )

    def token(self, subject: str) -> str:
        now = int(system_clock().timestamp())
        claims = {
            "iss": RSA_ISSUER,
            "aud": [AUDIENCE, "account"],
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            "typ": "Bearer",
            "azp": "accrue-portal",
            "realm_access": {"roles": ROLES},
            "accrue_legal_entities": LEGAL_ENTITIES,
            "email": f"{subject}@example.com",
            "email_verified": True,
            "scope": "openid profile email",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})


async def timed_async(call: Callable[[int], Awaitable[Any]], iterations: int) -> list[float]:
    """Microseconds per call, each call timed alone."""
    gc.collect()
    out = []
    clock = time.perf_counter_ns
    for i in range(iterations):
        start = clock()
        await call(i)
        out.append((clock() - start) / 1000)
    return out


def timed(call: Callable[[int], Any], iterations: int) -> list[float]:
    gc.collect()
    out = []
    clock = time.perf_counter_ns
    for i in range(iterations):
        start = clock()
        call(i)
        out.append((clock() - start) / 1000)
    return out


async def measure(iterations: int, directory: Path) -> dict[str, list[float]]:
    clock = system_clock
    results: dict[str, list[float]] = {}

    # 1. The gateway's verification, ES256 from the local issuer.
    local = LocalIssuer(directory / "issuer", GATEWAY_URL + LOCAL_ISSUER_PATH, clock)
    es_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=local_issuer_app(local)), base_url=GATEWAY_URL
    )
    es_verifier = TokenVerifier(VerifierConfig.of(local.issuer, AUDIENCE), es_http, clock)
    es_claims = ClaimsMapping()
    es_token = local.mint("local-admin", ROLES, LEGAL_ENTITIES, dt.timedelta(hours=1), AUDIENCE)
    es_principal = es_claims.principal(await es_verifier.verify(es_token))  # warms the JWKS

    async def verify_es(_: int) -> None:
        es_claims.principal(await es_verifier.verify(es_token))

    results["gateway: verify ES256 token + principal"] = await timed_async(verify_es, iterations)

    # 1'. The same, RS256 with Keycloak-shaped claims.
    provider = RsaProvider()
    rs_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app()), base_url=RSA_ISSUER)
    rs_verifier = TokenVerifier(VerifierConfig.of(RSA_ISSUER, AUDIENCE), rs_http, clock)
    rs_claims = ClaimsMapping(roles="realm_access.roles", client_systems={"workday-sync": "workday"})
    rs_token = provider.token("dana")
    rs_claims.principal(await rs_verifier.verify(rs_token))  # warms the JWKS

    async def verify_rs(_: int) -> None:
        rs_claims.principal(await rs_verifier.verify(rs_token))

    results["gateway: verify RS256 token + principal"] = await timed_async(verify_rs, iterations)
    await es_http.aclose()
    await rs_http.aclose()

    # 2. The gateway signs the internal token.
    keys = directory / "internal"
    ensure_keys(keys, ["gateway", "timekeeping"])
    signer = load_signer(keys, "gateway", clock)
    signer.token(es_principal)
    results["gateway: sign internal token, cached"] = timed(lambda _: signer.token(es_principal), iterations)
    callers = [
        Principal(f"user-{i}", es_principal.roles, es_principal.legal_entity_ids) for i in range(iterations)
    ]
    fresh_signer = load_signer(keys, "gateway", clock)
    results["gateway: sign internal token, uncached"] = timed(
        lambda i: fresh_signer.token(callers[i]), iterations
    )

    # 3. The service verifies it.
    verifier = load_verifier(keys, clock)
    header = f"Bearer {signer.token(es_principal)}"
    verifier.principal(header)
    results["service: verify internal token, cached"] = timed(
        lambda _: verifier.principal(header), iterations
    )
    headers = [f"Bearer {fresh_signer.token(callers[i])}" for i in range(iterations)]
    fresh_verifier = load_verifier(keys, clock)
    results["service: verify internal token, uncached"] = timed(
        lambda i: fresh_verifier.principal(headers[i]), iterations
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000, help="calls timed per measurement")
    args = parser.parse_args()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp:
        results = asyncio.run(measure(args.iterations, Path(tmp)))
    p50 = {name: percentile(values, 50) for name, values in results.items()}
    width = max(len(name) for name in results) + 2
    lines = [
        f"\n== identity verification cost per request ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC) ==",
        f"machine: {os.cpu_count()} cores, load average {load} (a shared machine inflates every figure)",
        f"{args.iterations} calls each, one at a time, warm JWKS; microseconds",
        f"{'':<{width}}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}",
    ]
    for name, values in results.items():
        lines.append(
            f"{name:<{width}}{p50[name]:>9.1f}{percentile(values, 90):>9.1f}{percentile(values, 99):>9.1f}"
            f"{sum(values) / len(values):>9.1f}"
        )
    for algorithm in ("ES256", "RS256"):
        steady = (
            p50[f"gateway: verify {algorithm} token + principal"]
            + p50["gateway: sign internal token, cached"]
            + p50["service: verify internal token, cached"]
        )
        first = (
            p50[f"gateway: verify {algorithm} token + principal"]
            + p50["gateway: sign internal token, uncached"]
            + p50["service: verify internal token, uncached"]
        )
        verdict = "PASS" if steady <= TARGET_P50_US else "FAIL"
        lines.append(
            f"per request, {algorithm} bearer token: {steady:.0f} µs p50 in the steady state "
            f"(target <= {TARGET_P50_US:.0f}) -> {verdict}; a caller's first request {first:.0f} µs"
        )
    say(*lines)


if __name__ == "__main__":
    main()
