"""Broken object-level authorization, tried on every route that takes an object id.

A principal holding every role but limited to legal entity B asks for, changes and acts on each of
legal entity A's objects by id: every answer is 404 exactly like a made-up id (no existence
leak), and afterwards every object reads back as it was (as an administrator sees it).
"""

import datetime as dt
import re
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing.identity import all_roles, person
from accrue.testing.rest import approved_time, billed, ok
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

# The collections whose records belong to a legal entity. Labor categories, FX and tax rates,
# rate cards and calendars are firm-wide and visible to everyone who may read them.
ENTITY_OWNED = {
    "legal-entities": "le",
    "customers": "cu",
    "consultants": "dev",
    "projects": "project",
    "contracts": "contract",
    "assignments": "assignment",
    "milestones": "milestone",
    "time-entries": "entry",
    "invoices": "invoice",
    "billing-runs": "run",
    "approval-delegations": "delegation",
    "period-locks": "lock",
    "contract-lines": "contract_line",
}
PATCHES = {"contracts": {"code": "K-OUTSIDER"}, "assignments": {"allocationPercent": "50"}}
MADE_UP = "00000000-0000-4000-8000-0000000000a1"


async def _objects(api: httpx.AsyncClient, firm: Any, instant: dt.datetime) -> dict[str, str]:
    f = await firm("-bola")
    ids = {key: f[key]["id"] for key in ("le", "cu", "dev", "project", "contract", "assignment")}
    ids["contract_line"] = f["contract"]["lines"][0]["id"]
    fixed_project = await ok(
        api.post(
            "/v1/projects",
            json={
                "code": "P-BOLA-FF",
                "name": "Fixed-fee audit",
                "customerId": f["cu"]["id"],
                "legalEntityId": f["le"]["id"],
                "managerId": f["boss"]["id"],
                "status": "PROJECT_STATUS_ACTIVE",
                "startDate": "2026-01-01",
            },
        )
    )
    fixed = await ok(
        api.post(
            "/v1/contracts",
            json={
                "code": "K-BOLA-FF",
                "customerId": f["cu"]["id"],
                "currency": "GBP",
                "lines": [
                    {
                        "projectId": fixed_project["id"],
                        "billingModel": "BILLING_MODEL_FIXED_FEE",
                        "feeAmount": "5000",
                    }
                ],
            },
        )
    )
    milestone = await ok(
        api.post(
            "/v1/milestones",
            json={
                "name": "Go-live",
                "contractLineId": fixed["lines"][0]["id"],
                "amount": "1000.00",
                "dueDate": "2026-11-30",
            },
        )
    )
    ids["milestone"] = milestone["id"]
    entry = await approved_time(api, f, "2026-11-03", "4")
    ids["entry"] = entry["id"]
    invoices = await billed(api, f["le"]["id"], {entry["id"]})
    ids["invoice"] = invoices[0]["id"]
    run = await ok(
        api.post(
            "/v1/billing-runs",
            json={"legalEntityId": f["le"]["id"], "periodStart": "2026-11-01", "periodEnd": "2026-11-30"},
        )
    )
    ids["run"] = run["id"]
    delegation = await ok(
        api.post(
            "/v1/approval-delegations",
            json={
                "delegatorId": f["boss"]["id"],
                "delegateId": f["dev"]["id"],
                "startDate": str((instant + dt.timedelta(days=2)).date()),
                "endDate": str((instant + dt.timedelta(days=12)).date()),
                "reason": "leave",
            },
        )
    )
    ids["delegation"] = delegation["id"]
    lock = await ok(
        api.post(
            "/v1/period-locks",
            json={"legalEntityId": f["le"]["id"], "lockedThrough": "2026-09-30", "reason": "Q3 closed"},
        )
    )
    ids["lock"] = lock["id"]
    return ids


def _valid_body(method: str, template: str, collection: str) -> dict[str, Any] | None:
    """A body the operation would accept, so a 404 is about the object, not the input."""
    if method == "PATCH":
        return PATCHES.get(collection, {"name": "outsider"})
    if method == "POST":
        return (
            {"reason": "outsider"} if template.endswith((":void", ":decline", ":reverse", ":reopen")) else {}
        )
    return None


def _id_routes(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    routes = []
    for template, operations in document["paths"].items():
        match = re.match(r"^/v1/([a-z-]+)/\{[^}]+\}", template)
        if match and match.group(1) in ENTITY_OWNED:
            for method in operations:
                routes.append((method.upper(), template, match.group(1)))
    return routes


async def test_another_entitys_objects_are_404_by_id_on_every_route_and_stay_unchanged(
    stack: Stack, api: httpx.AsyncClient, firm: Any, instant: dt.datetime
) -> None:
    ids = await _objects(api, firm, instant)
    other = await ok(
        api.post("/v1/legal-entities", json={"code": "B-BOLA", "name": "Other Ltd", "baseCurrency": "EUR"})
    )
    outsider = stack.tokens(clock_for(instant)).headers(
        person("outsider", *sorted(all_roles()), legal_entities=[other["id"]])
    )
    document = (await api.get("/openapi.json")).json()
    routes = _id_routes(document)
    assert {collection for _, _, collection in routes} == set(ENTITY_OWNED)

    async def snapshot() -> dict[str, Any]:
        state = {}
        for method, template, collection in routes:
            if method == "GET":
                path = re.sub(r"\{[^}]+\}", ids[ENTITY_OWNED[collection]], template)
                answer = (await api.get(path)).json()
                answer.pop("requestId", None)  # a problem document names its request
                state[path] = answer
        return state

    before = await snapshot()
    leaks = []
    for method, template, collection in routes:
        body = _valid_body(method, template, collection)
        answers = []
        for object_id in (ids[ENTITY_OWNED[collection]], MADE_UP):
            path = re.sub(r"\{[^}]+\}", object_id, template)
            response = await api.request(method, path, json=body, headers=outsider)
            answers.append((response.status_code, response.json().get("title")))
        if answers[0][0] != 404 or answers[0] != answers[1]:
            leaks.append(f"{method} {template}: theirs {answers[0]}, made-up {answers[1]}")
    assert leaks == [], (
        "objects of another legal entity answered differently from missing ones:\n" + "\n".join(leaks)
    )
    assert await snapshot() == before
