"""Internal tokens: only the gateway speaks for a caller; nothing else gets past the verifier."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from accrue.identity.errors import InvalidToken
from accrue.identity.internal import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    TOKEN_TYPE,
    InternalSigner,
    ensure_keys,
    load_signer,
    load_verifier,
)
from accrue.runtime.clock import FixedClock
from accrue.runtime.identity import ALL_LEGAL_ENTITIES, Principal, service_principal

pytestmark = pytest.mark.unit

START = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
DANA = Principal("dana", frozenset({"approver"}), frozenset({"le-1"}), client_id="portal", email="d@x.io")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    ensure_keys(tmp_path, ["gateway", "timekeeping", "observability"])
    return tmp_path


def test_a_gateway_token_names_the_caller_exactly(keys: Path, clock: FixedClock) -> None:
    token = load_signer(keys, "gateway", clock).token(DANA)

    assert load_verifier(keys, clock).principal(f"Bearer {token}") == DANA


def test_private_keys_are_private_files(keys: Path) -> None:
    assert (keys / "gateway.key.pem").stat().st_mode & 0o077 == 0
    assert (keys / "gateway.pub.pem").exists()


def test_a_service_signs_only_for_itself(keys: Path, clock: FixedClock) -> None:
    signer = load_signer(keys, "timekeeping", clock)

    assert load_verifier(keys, clock).principal(f"Bearer {signer.token()}") == service_principal(
        "timekeeping"
    )
    with pytest.raises(ValueError, match="only the gateway"):
        signer.token(DANA)


def test_a_token_a_service_forged_for_a_person_is_refused(keys: Path, clock: FixedClock) -> None:
    # The signer refuses, so forge by hand with timekeeping's own private key.
    signer = load_signer(keys, "timekeeping", clock)
    forged = _sign(
        signer, {"sub": "dana", "roles": ["finance"], "les": [ALL_LEGAL_ENTITIES]}, kid="timekeeping"
    )

    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(f"Bearer {forged}")
    assert refused.value.reason == "bad_signature"


def test_a_key_the_verifier_does_not_trust_is_unknown(
    keys: Path, tmp_path_factory: pytest.TempPathFactory, clock: FixedClock
) -> None:
    elsewhere = tmp_path_factory.mktemp("other")
    ensure_keys(elsewhere, ["gateway"])
    token = load_signer(elsewhere, "gateway", clock).token(DANA)

    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(f"Bearer {token}")
    assert refused.value.reason == "bad_signature"  # same kid, another key: the signature fails


def test_a_kid_nobody_trusts_is_unknown_key(keys: Path, clock: FixedClock) -> None:
    signer = load_signer(keys, "gateway", clock)
    token = _sign(signer, {"sub": "dana", "roles": [], "les": []}, kid="intruder")

    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(f"Bearer {token}")
    assert refused.value.reason == "unknown_key"


@pytest.mark.parametrize(
    ("age", "reason"),
    [(dt.timedelta(minutes=2, seconds=31), "expired"), (dt.timedelta(seconds=-31), "not_yet_valid")],
)
def test_time_is_judged_on_the_injected_clock(
    keys: Path, clock: FixedClock, age: dt.timedelta, reason: str
) -> None:
    token = load_signer(keys, "gateway", clock).token(DANA)
    clock.advance(age)

    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(f"Bearer {token}")
    assert refused.value.reason == reason


def test_within_the_leeway_a_token_still_verifies(keys: Path, clock: FixedClock) -> None:
    token = load_signer(keys, "gateway", clock).token(DANA)
    clock.advance(dt.timedelta(minutes=2, seconds=29))

    assert load_verifier(keys, clock).principal(f"Bearer {token}") == DANA


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic abc", "malformed"),
        ("Bearer ", "malformed"),
        ("Bearer a.b.c", "malformed"),
    ],
)
def test_missing_or_malformed_authorization(
    keys: Path, clock: FixedClock, header: str | None, reason: str
) -> None:
    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(header)
    assert refused.value.reason == reason


def test_alg_none_and_a_tampered_payload_are_refused(keys: Path, clock: FixedClock) -> None:
    token = load_signer(keys, "gateway", clock).token(DANA)
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["finance"]
    raised = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned_head = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "gateway", "typ": TOKEN_TYPE}).encode())
        .rstrip(b"=")
        .decode()
    )
    verifier = load_verifier(keys, clock)

    for forged, reason in [
        (f"{head}.{raised}.{signature}", "bad_signature"),
        (f"{unsigned_head}.{payload}.", "bad_algorithm"),
    ]:
        with pytest.raises(InvalidToken) as refused:
            verifier.principal(f"Bearer {forged}")
        assert refused.value.reason == reason


def test_a_token_for_another_audience_is_refused(keys: Path, clock: FixedClock) -> None:
    signer = load_signer(keys, "gateway", clock)
    token = _sign(signer, {"sub": "dana", "roles": [], "les": []}, kid="gateway", aud="something-else")

    with pytest.raises(InvalidToken) as refused:
        load_verifier(keys, clock).principal(f"Bearer {token}")
    assert refused.value.reason == "wrong_audience"


def test_the_signer_reuses_a_token_for_half_its_life(keys: Path, clock: FixedClock) -> None:
    signer = load_signer(keys, "gateway", clock)
    first = signer.token(DANA)
    clock.advance(dt.timedelta(seconds=59))
    assert signer.token(DANA) == first
    clock.advance(dt.timedelta(seconds=2))
    assert signer.token(DANA) != first


def _sign(signer: InternalSigner, claims: dict[str, object], *, kid: str, aud: str = AUDIENCE) -> str:
    key: ec.EllipticCurvePrivateKey = signer._key
    now = int(START.timestamp())
    body = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 60, **claims}
    return jwt.encode(body, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": TOKEN_TYPE})
