"""TokenVerifier: every bad token is refused with its reason; keys are found, rotated and fetched
sparingly.

Two providers, both in-process: the embedded LocalIssuer's own ASGI app (discovery and JWKS as
`make run` serves them), and a hand-made provider on httpx.MockTransport for what the local
issuer would never do (RSA and EdDSA keys, tokens without exp, odd JWKS documents, outages).
Time is a FixedClock at an instant of our own; the real date never matters.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.routing import Mount

from accrue.identity.errors import REASONS, InvalidToken
from accrue.identity.local_issuer import LocalIssuer
from accrue.identity.verifier import (
    DISCOVERY_PATH,
    TokenVerifier,
    VerifierConfig,
    discovery_url,
    token_from_authorization,
)
from accrue.runtime.clock import FixedClock

pytestmark = pytest.mark.unit

ISSUER = "http://issuer.test/realms/accrue"
AUDIENCE = "accrue-api"
START = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=5)
JWKS_PATH = "/realms/accrue/jwks.json"
DISCOVERY = "/realms/accrue" + DISCOVERY_PATH


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(document: dict[str, Any]) -> str:
    return b64url(json.dumps(document).encode())


def claims(clock: FixedClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock().timestamp())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "iat": now, "nbf": now}
    base["exp"] = now + int(TTL.total_seconds())
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


async def refused(verifier: TokenVerifier, token: str | None) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    error = caught.value
    # The refusal never carries the token: not in its message, not chained from PyJWT's errors.
    if token:
        for part in (token, *[p for p in token.split(".") if len(p) > 8]):
            assert part not in str(error)
            assert part not in repr(error)
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    return error


# -- the local issuer, served by its own ASGI app ------------------------------------------------


@dataclass
class Served:
    issuer: LocalIssuer
    clock: FixedClock
    http: httpx.AsyncClient
    hits: Counter[str]
    data_dir: Path

    def verifier(self, **options: Any) -> TokenVerifier:
        return TokenVerifier(VerifierConfig.of(ISSUER, AUDIENCE, **options), self.http, self.clock)

    def token(self, **options: Any) -> str:
        return self.issuer.mint("u-1", ["finance"], ["le-1"], options.pop("ttl", TTL), AUDIENCE, **options)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    clock = FixedClock(START)
    issuer = LocalIssuer(tmp_path / "data", ISSUER, clock)
    hits: Counter[str] = Counter()

    async def count(request: httpx.Request) -> None:
        hits[request.url.path] += 1

    # Mounted under the issuer's path, as a gateway would mount it.
    app = Starlette(routes=[Mount("/realms/accrue", app=issuer.app())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), event_hooks={"request": [count]}
    ) as http:
        yield Served(issuer, clock, http, hits, tmp_path / "data")


async def test_a_local_token_verifies_and_carries_its_claims(served: Served) -> None:
    token = served.token(client_id="workday-sync")
    verified = await served.verifier().verify(token)
    assert verified["iss"] == ISSUER
    assert verified["sub"] == "u-1"
    assert verified["aud"] == AUDIENCE
    assert verified["roles"] == ["finance"]
    assert verified["accrue_legal_entities"] == ["le-1"]
    assert verified["client_id"] == "workday-sync"
    assert verified["exp"] - verified["iat"] == 300
    assert served.hits == {DISCOVERY: 1, JWKS_PATH: 1}


async def test_the_jwks_is_cached_between_tokens(served: Served) -> None:
    verifier = served.verifier()
    for _ in range(20):
        await verifier.verify(served.token())
    served.clock.advance(dt.timedelta(minutes=14))
    await verifier.verify(served.token())
    assert served.hits == {DISCOVERY: 1, JWKS_PATH: 1}
    # Past jwks_max_age the keys are fetched again (a withdrawn key stops being trusted).
    served.clock.advance(dt.timedelta(minutes=2))
    await verifier.verify(served.token())
    assert served.hits == {DISCOVERY: 1, JWKS_PATH: 2}


async def test_missing(served: Served) -> None:
    assert (await refused(served.verifier(), None)).reason == "missing"
    assert (await refused(served.verifier(), "")).reason == "missing"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        "a.b.c",  # three segments, none of them base64 JSON
        segment({"alg": "ES256"})[:-3] + "!!!.e30.c2ln",
        "x" * 20_000,
    ],
)
async def test_malformed(served: Served, token: str) -> None:
    assert (await refused(served.verifier(), token)).reason == "malformed"


async def test_alg_none_is_refused(served: Served) -> None:
    for alg in ("none", "None", "NONE"):
        token = f"{segment({'alg': alg, 'kid': served.issuer.active_kid})}.{segment(claims(served.clock))}."
        assert (await refused(served.verifier(), token)).reason == "bad_algorithm"
    assert served.hits == {}  # refused before any key was looked for


async def test_hs256_signed_with_the_public_key_is_refused(served: Served) -> None:
    # The classic confusion: the issuer's public key, as PEM, used as an HMAC secret. A verifier
    # that let the token pick the algorithm would accept this.
    public_key = jwt.PyJWK(served.issuer.jwks()["keys"][0]).key
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        signing_input = (
            f"{segment({'alg': alg, 'kid': served.issuer.active_kid})}.{segment(claims(served.clock))}"
        )
        signature = hmac.new(pem, signing_input.encode(), digest).digest()
        token = f"{signing_input}.{b64url(signature)}"
        assert (await refused(served.verifier(), token)).reason == "bad_algorithm"


async def test_an_algorithm_outside_the_configured_list_is_refused(served: Served) -> None:
    # ES256 is the local issuer's algorithm; a verifier configured for RS256 only refuses it.
    verifier = served.verifier(algorithms=("RS256",))
    assert (await refused(verifier, served.token())).reason == "bad_algorithm"


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS256"), ("ES256", "none"), ()])
def test_none_and_hmac_cannot_even_be_configured(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        VerifierConfig.of(ISSUER, AUDIENCE, algorithms=algorithms)


def test_a_config_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValueError, match="issuer"):
        VerifierConfig.of("", AUDIENCE)
    with pytest.raises(ValueError, match="audience"):
        VerifierConfig.of(ISSUER, [])
    with pytest.raises(ValueError, match="leeway"):
        VerifierConfig.of(ISSUER, AUDIENCE, leeway=dt.timedelta(hours=1))
    assert VerifierConfig.of(ISSUER, ["a", "b"]).audiences == frozenset({"a", "b"})


async def test_wrong_issuer(served: Served) -> None:
    # Signed by a trusted key (same key file), but naming another issuer.
    impostor = LocalIssuer(served.data_dir, "http://evil.test", served.clock)
    token = impostor.mint("u-1", [], [], TTL, AUDIENCE)
    assert (await refused(served.verifier(), token)).reason == "wrong_issuer"


async def test_wrong_audience(served: Served) -> None:
    token = served.issuer.mint("u-1", [], [], TTL, "another-api")
    assert (await refused(served.verifier(), token)).reason == "wrong_audience"
    # One of several configured audiences is enough.
    verifier = TokenVerifier(VerifierConfig.of(ISSUER, ["another-api", AUDIENCE]), served.http, served.clock)
    assert (await verifier.verify(token))["aud"] == "another-api"


async def test_expired_beyond_the_leeway_and_accepted_within_it(served: Served) -> None:
    verifier = served.verifier()
    token = served.token()
    served.clock.advance(TTL + dt.timedelta(seconds=29))
    assert (await verifier.verify(token))["sub"] == "u-1"
    served.clock.advance(dt.timedelta(seconds=1))
    assert (await refused(verifier, token)).reason == "expired"
    served.clock.advance(dt.timedelta(days=1))
    assert (await refused(verifier, token)).reason == "expired"


async def test_the_leeway_is_configurable(served: Served) -> None:
    verifier = served.verifier(leeway=dt.timedelta(0))
    token = served.token()
    served.clock.advance(TTL)
    assert (await refused(verifier, token)).reason == "expired"


async def test_not_yet_valid_beyond_the_leeway_and_accepted_within_it(served: Served) -> None:
    # A token minted by an issuer whose clock runs ahead of ours: nbf (and iat) in our future.
    verifier = served.verifier()
    for ahead, accepted in ((dt.timedelta(seconds=29), True), (dt.timedelta(seconds=31), False)):
        ahead_clock = FixedClock(START + ahead)
        issuer_ahead = LocalIssuer(served.data_dir, ISSUER, ahead_clock)
        token = issuer_ahead.mint("u-1", [], [], TTL, AUDIENCE)
        if accepted:
            assert (await verifier.verify(token))["sub"] == "u-1"
        else:
            assert (await refused(verifier, token)).reason == "not_yet_valid"


async def test_bad_signature(served: Served) -> None:
    # Right kid, right alg, signed by a key that is not the issuer's.
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        claims(served.clock), stranger, algorithm="ES256", headers={"kid": served.issuer.active_kid}
    )
    assert (await refused(served.verifier(), forged)).reason == "bad_signature"
    # A genuine token whose claims were edited after signing.
    header, _, signature = served.token().split(".")
    edited = f"{header}.{segment(claims(served.clock, roles=['admin']))}.{signature}"
    assert (await refused(served.verifier(), edited)).reason == "bad_signature"


async def test_an_unknown_kid_is_refused(served: Served) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(served.clock), stranger, algorithm="ES256", headers={"kid": "nobody-knows"})
    assert (await refused(served.verifier(), token)).reason == "unknown_key"
    no_kid = jwt.encode(claims(served.clock), stranger, algorithm="ES256")
    assert (await refused(served.verifier(), no_kid)).reason == "unknown_key"


async def test_a_rotated_key_is_found_by_a_refresh_and_old_and_new_tokens_both_verify(served: Served) -> None:
    verifier = served.verifier()
    old_kid = served.issuer.active_kid
    old_token = served.token(ttl=dt.timedelta(hours=1))
    await verifier.verify(old_token)
    assert served.hits[JWKS_PATH] == 1

    new_kid = served.issuer.rotate()
    new_token = served.token(ttl=dt.timedelta(hours=1))
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    # Within the refresh interval the unknown kid cannot trigger a fetch yet...
    assert (await refused(verifier, new_token)).reason == "unknown_key"
    assert served.hits[JWKS_PATH] == 1
    # ...after it, the unknown kid refreshes the JWKS: no restart, both keys verify.
    served.clock.advance(dt.timedelta(seconds=30))
    assert (await verifier.verify(new_token))["sub"] == "u-1"
    assert (await verifier.verify(old_token))["sub"] == "u-1"
    assert served.hits[JWKS_PATH] == 2

    # Once the old key is dropped and the cache has aged out, its tokens stop verifying.
    served.issuer.drop(old_kid)
    served.clock.advance(dt.timedelta(minutes=15))
    assert (await refused(verifier, old_token)).reason == "unknown_key"
    assert (await verifier.verify(new_token))["sub"] == "u-1"


async def test_a_flood_of_unknown_kids_costs_the_provider_one_fetch_per_interval(served: Served) -> None:
    verifier = served.verifier()
    stranger = ec.generate_private_key(ec.SECP256R1())

    def made_up() -> str:
        return jwt.encode(
            claims(served.clock), stranger, algorithm="ES256", headers={"kid": uuid.uuid4().hex}
        )

    async def attempt() -> str:
        try:
            await verifier.verify(made_up())
        except InvalidToken as error:
            return error.reason
        return "accepted"

    # 200 at once, then 200 one after another: one discovery, one JWKS fetch in all.
    reasons = await asyncio.gather(*(attempt() for _ in range(200)))
    reasons += [await attempt() for _ in range(200)]
    assert set(reasons) == {"unknown_key"}
    assert served.hits == {DISCOVERY: 1, JWKS_PATH: 1}

    # Each later interval allows one more, however many arrive; genuine tokens are unaffected.
    for fetches in (2, 3):
        served.clock.advance(dt.timedelta(seconds=30))
        assert set(await asyncio.gather(*(attempt() for _ in range(100)))) == {"unknown_key"}
        assert served.hits == {DISCOVERY: 1, JWKS_PATH: fetches}
        assert (await verifier.verify(served.token()))["sub"] == "u-1"

    # The interval is a setting.
    served.clock.advance(dt.timedelta(seconds=30))
    patient = served.verifier(jwks_min_refresh_interval=dt.timedelta(minutes=5))
    await patient.verify(served.token())
    before = served.hits[JWKS_PATH]
    served.clock.advance(dt.timedelta(minutes=4))
    for _ in range(50):
        await attempt_with(patient, made_up())
    assert served.hits[JWKS_PATH] == before


async def attempt_with(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


# -- a hand-made provider on a MockTransport -----------------------------------------------------


@dataclass
class Provider:
    """A provider whose keys, documents and availability a test controls."""

    clock: FixedClock
    signers: dict[str, tuple[str, Any]] = field(default_factory=dict)  # kid -> (alg, private key)
    extra_jwks: list[dict[str, Any]] = field(default_factory=list)
    discovery_issuer: str = ISSUER
    status: int = 200
    hits: Counter[str] = field(default_factory=Counter)

    def add(self, kid: str, alg: str, private_key: Any) -> None:
        self.signers[kid] = (alg, private_key)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, (alg, private_key) in self.signers.items():
            algorithm = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys + self.extra_jwks}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.hits[request.url.path] += 1
        if self.status != 200:
            return httpx.Response(self.status, text="unavailable")
        if request.url.path == "/realms/accrue" + DISCOVERY_PATH:
            return httpx.Response(
                200, json={"issuer": self.discovery_issuer, "jwks_uri": "http://keys.test/certs"}
            )
        if request.url.path == "/certs":
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def sign(self, kid: str, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        alg, private_key = self.signers[kid]
        return jwt.encode(
            claims(self.clock, **overrides),
            private_key,
            algorithm=alg,
            headers={"kid": kid, **(headers or {})},
        )


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, Callable[..., TokenVerifier]]]:
    state = Provider(FixedClock(START))
    state.add("rsa-1", "RS256", RSA_KEY)
    state.add("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
    state.add("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate())
    async with httpx.AsyncClient(transport=httpx.MockTransport(state.handle)) as http:

        def verifier(**options: Any) -> TokenVerifier:
            return TokenVerifier(VerifierConfig.of(ISSUER, AUDIENCE, **options), http, state.clock)

        yield state, verifier


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
async def test_the_default_algorithms_all_verify(
    provider: tuple[Provider, Callable[..., TokenVerifier]], kid: str
) -> None:
    state, verifier = provider
    assert (await verifier().verify(state.sign(kid)))["sub"] == "u-1"


async def test_a_token_whose_alg_does_not_fit_its_key_is_refused(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    # Signed with the EC key but claiming the RSA key's kid, and the other way round.
    ec_key = state.signers["ec-1"][1]
    token = jwt.encode(claims(state.clock), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    assert (await refused(verifier(), token)).reason == "bad_algorithm"
    token = jwt.encode(claims(state.clock), RSA_KEY, algorithm="RS256", headers={"kid": "ec-1"})
    assert (await refused(verifier(), token)).reason == "bad_algorithm"


async def test_symmetric_and_encryption_keys_in_a_jwks_are_never_used(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    secret = b"shared-secret-shared-secret-0123"
    state.extra_jwks.append({"kty": "oct", "kid": "oct-1", "k": b64url(secret), "alg": "HS256"})
    enc = ec.generate_private_key(ec.SECP256R1())
    enc_jwk = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(enc.public_key()))
    state.extra_jwks.append({**enc_jwk, "kid": "enc-1", "use": "enc"})
    hs = jwt.encode(claims(state.clock), secret, algorithm="HS256", headers={"kid": "oct-1"})
    assert (await refused(verifier(), hs)).reason == "bad_algorithm"
    # Even if HS256 could be configured, an oct key would not be in the cache to use.
    by_enc = jwt.encode(claims(state.clock), enc, algorithm="ES256", headers={"kid": "enc-1"})
    assert (await refused(verifier(), by_enc)).reason == "unknown_key"


async def test_a_token_without_exp_is_malformed(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    assert (await refused(verifier(), state.sign("ec-1", exp=None))).reason == "malformed"
    assert (await refused(verifier(), state.sign("ec-1", exp="tomorrow"))).reason == "malformed"
    assert (await refused(verifier(), state.sign("ec-1", exp=True))).reason == "malformed"


async def test_a_token_with_a_critical_extension_is_malformed(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    token = state.sign("ec-1", headers={"crit": ["exp-ext"], "exp-ext": 1})
    assert (await refused(verifier(), token)).reason == "malformed"


async def test_a_token_with_an_audience_list(provider: tuple[Provider, Callable[..., TokenVerifier]]) -> None:
    state, verifier = provider
    token = state.sign("ec-1", aud=["account", AUDIENCE])
    assert (await verifier().verify(token))["aud"] == ["account", AUDIENCE]
    token = state.sign("ec-1", aud=["account"])
    assert (await refused(verifier(), token)).reason == "wrong_audience"
    assert (await refused(verifier(), state.sign("ec-1", aud=None))).reason == "wrong_audience"


async def test_provider_unavailable_then_back(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    checker = verifier()
    state.status = 503
    token = state.sign("ec-1", exp=int(START.timestamp()) + 3600)
    assert (await refused(checker, token)).reason == "provider_unavailable"
    fetches = sum(state.hits.values())
    # Rate-limited while down, too: a second request within the interval does not ask again.
    assert (await refused(checker, token)).reason == "provider_unavailable"
    assert sum(state.hits.values()) == fetches
    state.status = 200
    state.clock.advance(dt.timedelta(seconds=30))
    assert (await checker.verify(token))["sub"] == "u-1"


async def test_keys_held_keep_working_while_the_provider_is_down(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    checker = verifier()
    await checker.verify(state.sign("ec-1"))
    state.status = 500
    state.clock.advance(dt.timedelta(minutes=20))  # past jwks_max_age: a refresh is tried and fails
    assert (await checker.verify(state.sign("ec-1")))["sub"] == "u-1"
    # A kid we never had cannot be checked while the provider is down: that is not the token's fault.
    state.clock.advance(dt.timedelta(seconds=30))
    stranger = jwt.encode(claims(state.clock), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-2"})
    assert (await refused(checker, stranger)).reason == "provider_unavailable"


async def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    state.discovery_issuer = "http://evil.test"
    assert (await refused(verifier(), state.sign("ec-1"))).reason == "provider_unavailable"
    assert "/certs" not in state.hits


async def test_a_configured_jwks_url_skips_discovery(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    checker = verifier(jwks_url="http://keys.test/certs")
    assert (await checker.verify(state.sign("rsa-1")))["sub"] == "u-1"
    assert state.hits == {"/certs": 1}


def test_every_reason_has_a_description_and_a_stable_name() -> None:
    assert REASONS == (
        "missing",
        "malformed",
        "bad_algorithm",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "provider_unavailable",
    )
    for reason in REASONS:
        assert str(InvalidToken(reason)).startswith(f"{reason}: ")


def test_discovery_url_has_no_doubled_slash() -> None:
    assert (
        discovery_url("https://id.example/realms/a/")
        == "https://id.example/realms/a/.well-known/openid-configuration"
    )
    assert discovery_url("https://id.example") == "https://id.example/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "missing"),
        ("Bearer", "malformed"),
        ("Bearer   ", "malformed"),
        ("Bearer a b", "malformed"),
    ],
)
def test_the_authorization_header_is_read_strictly(header: str | None, expected: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        token_from_authorization(header)
    assert caught.value.reason == expected


def test_a_bearer_token_is_taken_from_the_header() -> None:
    assert token_from_authorization("Bearer abc.def.ghi") == "abc.def.ghi"
    assert token_from_authorization("bearer  abc.def.ghi ") == "abc.def.ghi"


# -- the verified-token cache ---------------------------------------------------------------------


async def test_a_token_seen_again_is_not_checked_again_but_its_time_still_is(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    v = verifier()
    token = state.sign("ec-1")
    first = await v.verify(token)

    with patch("accrue.identity.verifier._signed_claims", side_effect=AssertionError("checked again")):
        assert await v.verify(token) == first
        state.clock.advance(TTL + dt.timedelta(minutes=1))  # past exp and the 30 s leeway
        assert (await refused(v, token)).reason == "expired"


async def test_a_remembered_token_dies_with_its_key(
    provider: tuple[Provider, Callable[..., TokenVerifier]],
) -> None:
    state, verifier = provider
    v = verifier(jwks_max_age=dt.timedelta(minutes=2))
    token = state.sign("ec-1", exp=int((START + dt.timedelta(hours=1)).timestamp()))
    await v.verify(token)

    del state.signers["ec-1"]  # the provider withdraws the key
    state.clock.advance(dt.timedelta(minutes=3))  # the keys are fetched again on the next use

    assert (await refused(v, token)).reason == "unknown_key"
