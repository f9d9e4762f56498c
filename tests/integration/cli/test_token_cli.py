"""`accrue token` against the whole stack: tokens from its local issuer that the gateway accepts."""

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing import identity
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e


def accrue_token(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert stack.identity_dir is not None
    # ACCRUE_CLOCK_START (pinned by the plugin) is kept: the CLI dates tokens by the stack's clock.
    base = {k: v for k, v in os.environ.items() if k not in ("ACCRUE_DATA_DIR", "ACCRUE_API_URL")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accrue.cli",
            "token",
            "--url",
            stack.gateway_url,
            "--data-dir",
            str(stack.identity_dir.parent),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **env},
    )


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(stack: Stack, instant: dt.datetime) -> Any:
    headers = stack.tokens(clock_for(instant)).headers(identity.admin())
    with httpx.Client(base_url=stack.gateway_url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def person(api: httpx.Client) -> dict[str, Any]:
    le = api.post("/v1/legal-entities", json={"code": "TOK-LE", "name": "Tokens Ltd", "baseCurrency": "GBP"})
    assert le.status_code == 200, le.text
    lc = api.post("/v1/labor-categories", json={"code": "TOK-LC", "name": "Engineer"})
    assert lc.status_code == 200, lc.text
    made = api.post(
        "/v1/consultants",
        json={
            "code": "TOK-E1",
            "name": "Robin Token",
            "email": "robin@tokens.example",
            "legalEntityId": le.json()["id"],
            "laborCategoryId": lc.json()["id"],
            "activeFrom": "2020-01-01",
        },
    )
    assert made.status_code == 200, made.text
    return dict(made.json())


def test_with_no_option_a_local_administrator_with_every_role_in_every_legal_entity(
    stack: Stack, api: httpx.Client
) -> None:
    done = accrue_token(stack)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token, "stdout is the token alone, for $(accrue token)"
    said = claims(token)
    assert said["sub"] == "local-admin"
    assert set(said["roles"]) == set(identity.all_roles())
    assert "service" not in said["roles"]
    assert said["accrue_legal_entities"] == ["*"]
    assert said["iss"] == stack.gateway_url + "/local-issuer"
    assert said["exp"] - said["iat"] == 8 * 3600
    assert "a local administrator" in done.stderr
    made = httpx.post(
        f"{stack.gateway_url}/v1/legal-entities",
        json={"code": "TOK-ADMIN", "name": "Admin made", "baseCurrency": "EUR"},
        headers=bearer(token),
        timeout=30,
    )
    assert made.status_code == 200, made.text


def test_as_a_consultant_code_is_that_consultant_in_their_legal_entity(
    stack: Stack, person: dict[str, Any]
) -> None:
    done = accrue_token(stack, "--as", "TOK-E1", "--ttl", "30m")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    said = claims(token)
    assert said["sub"] == person["id"]
    assert said["roles"] == ["consultant"]
    assert said["accrue_legal_entities"] == [person["legalEntityId"]]
    assert said["email"] == "robin@tokens.example"
    assert said["exp"] - said["iat"] == 1800
    own = httpx.get(f"{stack.gateway_url}/v1/consultants/{person['id']}", headers=bearer(token), timeout=30)
    assert own.status_code == 200, own.text
    write = httpx.post(
        f"{stack.gateway_url}/v1/legal-entities",
        json={"code": "TOK-NO", "name": "Refused", "baseCurrency": "EUR"},
        headers=bearer(token),
        timeout=30,
    )
    assert write.status_code == 403, write.text


def test_as_an_id_with_roles_and_legal_entities_given(stack: Stack, person: dict[str, Any]) -> None:
    done = accrue_token(
        stack, "--as", person["id"], "--role", "approver", "--role", "project_manager", "--legal-entity", "*"
    )
    assert done.returncode == 0, done.stderr
    said = claims(done.stdout.strip())
    assert (said["sub"], said["roles"], said["accrue_legal_entities"]) == (
        person["id"],
        ["approver", "project_manager"],
        ["*"],
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--as", "NOBODY-HERE"), {}, "--as 'NOBODY-HERE': no consultant has that code or id"),
        (("--role", "service"), {}, "--role service: not a role"),
        (("--ttl", "forever"), {}, "--ttl 'forever' is not a duration"),
        ((), {"ACCRUE_GATEWAY_OIDC_ISSUER": "https://kc.example/realms/acme"}, "not the local issuer"),
    ],
)
def test_refusals_say_why_and_print_no_token(
    stack: Stack, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = accrue_token(stack, *args, **env)
    assert done.returncode == 1
    assert message in done.stderr
    assert done.stdout == ""
