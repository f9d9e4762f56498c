"""Accrue against a REAL OpenID Provider: the certified `oidc-provider` from npm, not self-minted tokens.

The provider (tests/e2e/oidc/provider.mjs) issues RFC 9068 JWT access tokens: client credentials
for an integration client, and a person's token by the authorization-code flow with PKCE. The
stack runs with ACCRUE_GATEWAY_OIDC_ISSUER pointing at it (so the local issuer is off), both
kinds of token work through the gateway, `accrue seed` authenticates by client credentials
discovered from the gateway's OpenAPI, and the provider's signing key is rotated while the stack
runs: tokens signed by the old key keep working, tokens from the new key start working once the
gateway fetches the JWKS again (at most once per 30 s, by design), and nothing is restarted.

oidc-provider is installed at test time into a cache dir (npm install --prefix); the test is
skipped, saying why, only when npm is missing or cannot reach the registry. The stack runs on the
real clock here: the provider dates its tokens by it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from accrue.embedded import free_port
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

OIDC_PROVIDER = "oidc-provider@9.6.0"
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "oidc" / "provider.mjs"
RESOURCE = "urn:accrue"
SEED_CLIENT = ("accrue-seed", "seed-secret-1")
PORTAL = ("portal", "portal-secret-1")
REDIRECT = "http://127.0.0.1:9/callback"  # never reached: the code is read from the redirect


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "accrue-tests" / OIDC_PROVIDER.replace("@", "-")


@pytest.fixture(scope="module")
def provider_dir() -> Path:
    """A dir with oidc-provider in node_modules and the provider script, installed once per machine."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: cannot run the oidc-provider test")
    cache = _cache_dir()
    if not (cache / "node_modules" / "oidc-provider" / "package.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund", OIDC_PROVIDER],
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm could not install {OIDC_PROVIDER} within 240 s (registry unreachable?)")
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if any(s in output for s in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "network")):
                pytest.skip(f"npm cannot reach the registry to install {OIDC_PROVIDER}: {output[-300:]}")
            pytest.fail(f"npm install {OIDC_PROVIDER} failed:\n{output[-2000:]}")
    # Next to node_modules, so `import 'oidc-provider'` resolves from the cache.
    shutil.copy(SCRIPT, cache / SCRIPT.name)
    return cache


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def signing_key(kid: str) -> dict[str, str]:
    """A private EC P-256 JWK for the provider."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers()
    public = private.public_numbers
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(public.x),
        "y": _b64(public.y),
        "d": _b64(private.private_value),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    }


class Provider:
    """The provider process; `start(keys)` (re)starts it on the same port and issuer."""

    def __init__(self, directory: Path, log_dir: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "oidc-provider.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = log_dir / "oidc-provider.json"

    def start(self, keys: list[dict[str, str]]) -> None:
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "jwks": {"keys": keys},
            "clients": [
                {
                    "client_id": SEED_CLIENT[0],
                    "client_secret": SEED_CLIENT[1],
                    "grant_types": ["client_credentials"],
                    "redirect_uris": [],
                    "response_types": [],
                },
                {
                    "client_id": PORTAL[0],
                    "client_secret": PORTAL[1],
                    "grant_types": ["authorization_code"],
                    "redirect_uris": [REDIRECT],
                    "response_types": ["code"],
                },
            ],
            "accounts": {"fiona": {"roles": ["finance"], "legal_entities": ["*"]}},
            "client_roles": {SEED_CLIENT[0]: {"roles": ["integration"], "legal_entities": ["*"]}},
        }
        self.config.write_text(json.dumps(config))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(self.directory / SCRIPT.name), str(self.config)],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.discovery_url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"oidc-provider did not start:\n{self.log.read_text()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def endpoints(self) -> dict[str, Any]:
        return dict(httpx.get(self.discovery_url, timeout=5).json())

    def client_token(self) -> str:
        """Client credentials (RFC 6749 §4.4), as an integration client gets its token."""
        response = httpx.post(
            self.endpoints()["token_endpoint"],
            data={"grant_type": "client_credentials", "resource": RESOURCE},
            auth=SEED_CLIENT,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def user_token(self, login: str) -> str:
        """The authorization-code flow with PKCE, as a portal signs a person in."""
        endpoints = self.endpoints()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        with httpx.Client(timeout=10, follow_redirects=False) as browser:
            response = browser.get(
                endpoints["authorization_endpoint"],
                params={
                    "client_id": PORTAL[0],
                    "response_type": "code",
                    "redirect_uri": REDIRECT,
                    "scope": "openid api",
                    "resource": RESOURCE,
                    "login_hint": login,
                    "state": "s1",
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                },
            )
            for _ in range(8):  # authorize -> interaction -> resume -> the client's redirect URI
                location = response.headers.get("location", "")
                assert response.status_code in (302, 303), response.text
                if location.startswith(REDIRECT):
                    break
                response = browser.get(httpx.URL(self.issuer).join(location))
            code = httpx.URL(location).params["code"]
            exchanged = browser.post(
                endpoints["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT,
                    "code_verifier": verifier,
                    "resource": RESOURCE,
                },
                auth=PORTAL,
            )
        assert exchanged.status_code == 200, exchanged.text
        return str(exchanged.json()["access_token"])


def header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def get(stack: Stack, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{stack.gateway_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def accrue(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    return subprocess.run(
        [sys.executable, "-m", "accrue.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture
def provider(provider_dir: Path, tmp_path: Path) -> Iterator[Provider]:
    running = Provider(provider_dir, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_tokens_from_a_real_provider_work_and_survive_its_key_rotation_without_a_restart(
    provider: Provider, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    old_key, new_key = signing_key("key-1"), signing_key("key-2")
    provider.start([old_key])
    stack = Stack.from_catalogue(
        database_url=database_url,
        nats_url=nats_url,
        log_dir=tmp_path / "stack",
        extra_env={
            "ACCRUE_GATEWAY_OIDC_ISSUER": provider.issuer,
            "ACCRUE_GATEWAY_CLIENT_SYSTEMS": json.dumps({SEED_CLIENT[0]: "seed"}),
        },
    )
    with stack:
        gateway_pid = stack.pid("gateway")
        assert httpx.get(f"{stack.gateway_url}/v1/legal-entities", timeout=30).status_code == 401
        # A person, fiona (finance), signed in by the authorization-code flow, and an integration
        # client by client credentials. (Their first use makes the gateway fetch the JWKS, which
        # starts its 30 s wait before another fetch; the rest of this part runs inside it.)
        old_user, old_client = provider.user_token("fiona"), provider.client_token()
        assert header(old_user)["kid"] == header(old_client)["kid"] == "key-1"
        assert get(stack, "/v1/legal-entities", old_user).status_code == 200
        assert get(stack, "/v1/kpis", old_client).status_code == 403, "integration may not read KPIs"

        # The local issuer is off: `accrue token` says so instead of minting a useless token.
        refused = accrue("token", "--url", stack.gateway_url)
        assert refused.returncode == 1
        assert "does not run the local issuer" in refused.stderr

        # `accrue seed` by client credentials, the provider found through the gateway's OpenAPI
        # document; master data takes its rows as the system "seed" the client maps to.
        seeded = accrue(
            "seed",
            "--consultants",
            "3",
            "--url",
            stack.gateway_url,
            "--client-id",
            SEED_CLIENT[0],
            "--client-secret",
            SEED_CLIENT[1],
        )
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        assert f"Seeded with client credentials of {SEED_CLIENT[0]}" in seeded.stdout
        entities = get(stack, "/v1/legal-entities", old_user)
        assert entities.status_code == 200, entities.text
        assert {e["code"] for e in entities.json()["legalEntities"]} == {"ACME-UK", "ACME-DE", "ACME-US"}
        person = get(stack, "/v1/consultants?pageSize=1", old_user).json()["consultants"][0]
        history = get(stack, f"/v1/consultants/{person['id']}/changes", old_user).json()["changes"]
        assert (history[0]["source"], history[0]["actor"]) == ("seed", SEED_CLIENT[0])

        # Rotation: the provider signs with a new key and still publishes the old one.
        provider.stop()
        provider.start([new_key, old_key])
        new_user, new_client = provider.user_token("fiona"), provider.client_token()
        assert header(new_user)["kid"] == header(new_client)["kid"] == "key-2"
        # Tokens signed with the old key are still good (until they expire).
        assert get(stack, "/v1/legal-entities", old_user).status_code == 200
        # The new key's tokens work as soon as the gateway may fetch the JWKS again (an unknown
        # kid triggers it, at most once per 30 s since its previous fetch).
        deadline = time.monotonic() + 45
        while (answer := get(stack, "/v1/legal-entities", new_user)).status_code != 200:
            assert answer.status_code in (401, 503), answer.text
            assert time.monotonic() < deadline, f"the new key was never accepted: {answer.text}"
            time.sleep(1)
        assert get(stack, "/v1/legal-entities", new_user).status_code == 200
        rows = {
            "laborCategories": [
                {"externalRef": {"system": "seed", "id": "LC-ROT"}, "code": "LC-ROT", "name": "R"}
            ],
            "source": "seed",
        }
        upserted = httpx.post(
            f"{stack.gateway_url}/v1/labor-categories:batchUpsert",
            json=rows,
            headers={"Authorization": f"Bearer {new_client}"},
            timeout=30,
        )
        assert upserted.status_code == 200, upserted.text
        # ... and the old ones still are, with both keys now held.
        assert get(stack, "/v1/legal-entities", old_user).status_code == 200
        assert get(stack, "/v1/legal-entities", old_client).status_code == 200
        assert stack.pid("gateway") == gateway_pid, "no restart"
