"""Small REST helpers the end-to-end tests share: a 200 body, a problem document, approved time
and a billing run that has caught up with it. They talk to the gateway as a portal would."""

import asyncio
from collections.abc import Awaitable
from typing import Any

import httpx

NOVEMBER = {"periodStart": "2026-11-01", "periodEnd": "2026-11-30"}
PENDING = "TIME_ENTRY_STATUS_PENDING_APPROVAL"


async def ok(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    """The JSON body of a request that must succeed (the body is in the failure message)."""
    answer = await response
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 problem document of a request that must fail with `status`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status, body
    return body


async def approved_time(api: httpx.AsyncClient, f: dict[str, Any], day: str, hours: str) -> dict[str, Any]:
    """One entry by the firm's `dev` on its `project`, submitted and approved by its `boss`."""
    body = {"consultantId": f["dev"]["id"], "projectId": f["project"]["id"], "workDate": day, "hours": hours}
    entry = await ok(api.post("/v1/time-entries", json=body))
    assert entry["status"] == PENDING, entry
    return await ok(api.post(f"/v1/time-entries/{entry['id']}:approve", json={"approverId": f["boss"]["id"]}))


async def billed(
    api: httpx.AsyncClient,
    le: str,
    entry_ids: set[str],
    period: dict[str, str] = NOVEMBER,
    within: float = 20,
) -> list[dict[str, Any]]:
    """Run billing until the entries (which reach billing over JetStream) are on the drafts."""
    body = {**period, "legalEntityId": le}
    async with asyncio.timeout(within):
        while True:
            run = await ok(api.post("/v1/billing-runs", json=body))
            on = {i for inv in run["invoices"] for line in inv["lines"] for i in line["sourceTimeEntryIds"]}
            if on >= entry_ids:
                invoices: list[dict[str, Any]] = run["invoices"]
                return invoices
            await asyncio.sleep(0.2)
