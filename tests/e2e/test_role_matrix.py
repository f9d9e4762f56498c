"""Every route of the gateway x every role, with real tokens, against the access policy.

Routes come from the gateway's own catalogue (its OpenAPI document names each route's gRPC
operation); expectations come from policy.toml, not from the document. A role the policy does not
list gets 403 naming the missing role; a role it lists is never refused for its role (it may still
get 400/404/422 for the made-up ids and empty bodies used here, and every collection it may list
answers 200). A route whose operation has no policy entry fails here.
"""

import datetime as dt
import re
from typing import Any

import httpx
import pytest

from accrue.identity.policy import load_policy
from accrue.runtime.clock import clock_for
from accrue.testing.identity import person
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

MADE_UP_ID = "00000000-0000-4000-8000-00000000beef"
ALLOWED_FAILURES = {400, 404, 409, 422}


def _routes(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    routes = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            path = re.sub(r"\{[^}]+\}", MADE_UP_ID, template)
            routes.append((method.upper(), path, operation.get("x-accrue-operation", "")))
    return routes


async def test_every_route_answers_every_role_as_the_policy_says(stack: Stack, instant: dt.datetime) -> None:
    policy = load_policy()
    roles = sorted(set(policy.roles) - {"service"})
    tokens = stack.tokens(clock_for(instant))
    headers = {role: tokens.headers(person(f"matrix-{role}", role)) for role in roles}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as api:
        document = (await api.get("/openapi.json")).json()
        routes = _routes(document)
        assert len(routes) > 100
        wrong: list[str] = []
        for method, path, operation in routes:
            entry = policy.entry(operation)
            assert entry is not None, f"{method} {path} ({operation or 'no operation'}) has no policy entry"
            for role in roles:
                body = {} if method in {"POST", "PATCH", "PUT"} else None
                response = await api.request(method, path, json=body, headers=headers[role])
                reason = response.json().get("reason") if response.status_code >= 400 else None
                if role in entry.roles:
                    ok = response.status_code == 200 or (
                        response.status_code in ALLOWED_FAILURES | {403} and reason != "MISSING_ROLE"
                    )
                    if operation.split("/")[1].startswith("List") and MADE_UP_ID not in path:
                        ok = response.status_code == 200  # a collection the role may list
                else:
                    ok = response.status_code == 403 and reason == "MISSING_ROLE"
                if not ok:
                    wrong.append(
                        f"{role:>16} {method} {path} -> {response.status_code} {reason} {response.text[:160]}"
                    )
    assert wrong == [], f"{len(wrong)} answers differ from the policy:\n" + "\n".join(wrong[:60])


async def test_the_same_route_without_a_token_is_401_and_with_a_token_for_another_audience_too(
    stack: Stack, instant: dt.datetime
) -> None:
    issuer = stack.issuer(clock_for(instant))
    elsewhere = issuer.mint("dana", ["finance"], ["*"], dt.timedelta(minutes=5), "another-app")
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as api:
        missing = await api.get("/v1/invoices")
        wrong_audience = await api.get("/v1/invoices", headers={"Authorization": f"Bearer {elsewhere}"})

    assert missing.status_code == 401
    assert wrong_audience.status_code == 401
    assert 'error_description="wrong_audience"' in wrong_audience.headers["www-authenticate"]
