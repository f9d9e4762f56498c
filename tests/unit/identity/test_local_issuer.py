"""LocalIssuer: the key made once and kept private, minted tokens, rotation, discovery and JWKS."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import httpx
import jwt
import pytest
from jwt.types import Options

from accrue.identity.local_issuer import ALGORITHM, KEY_FILE_NAME, LocalIssuer
from accrue.runtime.clock import FixedClock

pytestmark = pytest.mark.unit

ISSUER = "http://127.0.0.1:8080/issuer"
START = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def test_the_key_is_made_once_in_a_private_file(tmp_path: Path, clock: FixedClock) -> None:
    data = tmp_path / "data"
    first = LocalIssuer(data, ISSUER, clock)
    key_file = data / KEY_FILE_NAME
    assert first.key_file == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # Started again (another process, a restart): the same key, not a new one.
    again = LocalIssuer(data, ISSUER, clock)
    assert again.active_kid == first.active_kid
    assert again.kids == [first.active_kid]
    assert [p.name for p in data.iterdir()] == [KEY_FILE_NAME]  # no temporary files left behind


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    issuer.key_file.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        LocalIssuer(tmp_path, ISSUER, clock)


def test_a_key_file_whose_kid_does_not_match_its_key_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    document = json.loads(issuer.key_file.read_text())
    document["keys"][0]["kid"] = "forged"
    document["active"] = "forged"
    issuer.key_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="does not match its kid"):
        LocalIssuer(tmp_path, ISSUER, clock)


def test_a_minted_token_has_its_claims_and_times_from_the_clock(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    token = issuer.mint(
        "E2",
        ["consultant", "approver", "consultant"],
        ["le-2", "le-1"],
        dt.timedelta(hours=1),
        "accrue-api",
        client_id="accrue-cli",
        email="dana@acme.example",
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": ALGORITHM, "kid": issuer.active_kid, "typ": "at+jwt"}
    public_key = jwt.PyJWK(issuer.jwks()["keys"][0]).key
    # PyJWT's own time checks read the wall clock; only the signature and audience are checked here.
    no_time: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    claims = jwt.decode(token, public_key, algorithms=[ALGORITHM], audience="accrue-api", options=no_time)
    now = int(START.timestamp())
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 3600
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "E2"
    assert claims["roles"] == ["approver", "consultant"]
    assert claims["accrue_legal_entities"] == ["le-1", "le-2"]
    assert claims["client_id"] == "accrue-cli"
    assert claims["email"] == "dana@acme.example"
    assert claims["email_verified"] is True
    assert len(claims["jti"]) == 32


@pytest.mark.parametrize(
    ("subject", "ttl", "audience"),
    [("", dt.timedelta(minutes=1), "a"), ("s", dt.timedelta(0), "a"), ("s", dt.timedelta(minutes=1), "")],
)
def test_mint_refuses_what_no_token_should_be(
    tmp_path: Path, clock: FixedClock, subject: str, ttl: dt.timedelta, audience: str
) -> None:
    with pytest.raises(ValueError, match="a token"):
        LocalIssuer(tmp_path, ISSUER, clock).mint(subject, [], [], ttl, audience)


def test_rotation_keeps_the_old_key_published_until_dropped(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    old = issuer.active_kid
    new = issuer.rotate()
    assert issuer.active_kid == new != old
    assert {key["kid"] for key in issuer.jwks()["keys"]} == {old, new}
    assert jwt.get_unverified_header(issuer.mint("s", [], [], dt.timedelta(minutes=1), "a"))["kid"] == new
    with pytest.raises(ValueError, match="rotate first"):
        issuer.drop(new)
    with pytest.raises(KeyError):
        issuer.drop("no-such-kid")
    issuer.drop(old)
    assert [key["kid"] for key in issuer.jwks()["keys"]] == [new]
    assert stat.S_IMODE(issuer.key_file.stat().st_mode) == 0o600


def test_a_rotation_by_another_process_is_seen_without_a_restart(tmp_path: Path, clock: FixedClock) -> None:
    # The gateway serves the JWKS while `accrue token` (another process) may rotate the key.
    serving = LocalIssuer(tmp_path, ISSUER, clock)
    rotating = LocalIssuer(tmp_path, ISSUER, clock)
    new = rotating.rotate()
    assert new in {key["kid"] for key in serving.jwks()["keys"]}
    assert serving.active_kid == new


def test_the_jwks_holds_public_keys_only(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    [key] = issuer.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")


async def test_discovery_and_jwks_are_served(tmp_path: Path, clock: FixedClock) -> None:
    issuer = LocalIssuer(tmp_path, ISSUER, clock)
    transport = httpx.ASGITransport(app=issuer.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as http:
        discovery = await http.get("/.well-known/openid-configuration")
        assert discovery.status_code == 200
        assert discovery.json()["issuer"] == ISSUER
        assert discovery.json()["jwks_uri"] == ISSUER + "/jwks.json"
        assert discovery.json()["id_token_signing_alg_values_supported"] == ["ES256"]
        jwks = await http.get("/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json() == issuer.jwks()
        assert jwks.headers["cache-control"] == "max-age=60"
        assert (await http.post("/jwks.json")).status_code == 405
