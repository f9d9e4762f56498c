"""The audit trail over REST, on the whole stack: who approved is who the token says.

GET /v1/audit-events (observability aggregating every service's trail) shows the approval with
the approver taken from the bearer token; verification over every chain comes back intact; a
viewer is refused; an auditor of another legal entity does not see the approval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing import identity
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

APPROVE = "accrue.timekeeping.v1.TimekeepingService/ApproveTimeEntry"


async def test_the_trail_shows_the_approver_from_the_token(
    api: httpx.AsyncClient, firm: Any, stack: Stack, instant: dt.datetime
) -> None:
    f = await firm("-audit")
    day = (instant - dt.timedelta(days=1)).date().isoformat()
    submitted = await api.post(
        "/v1/time-entries",
        json={"consultantId": f["dev"]["id"], "projectId": f["project"]["id"], "workDate": day, "hours": "6"},
    )
    assert submitted.status_code == 200, submitted.text
    entry = submitted.json()
    assert entry["status"] == "TIME_ENTRY_STATUS_PENDING_APPROVAL", entry
    # The body names nobody: the approver is whoever the token says.
    boss = identity.person(f["boss"]["id"], "approver")
    tokens = stack.tokens(clock_for(instant))
    approved = await api.post(
        f"/v1/time-entries/{entry['id']}:approve", json={}, headers=tokens.headers(boss)
    )
    assert approved.status_code == 200, approved.text

    auditor = tokens.headers(identity.person("audrey@firm", "auditor"))
    listed = await api.get("/v1/audit-events", params={"resourceId": entry["id"]}, headers=auditor)
    assert listed.status_code == 200, listed.text
    events = listed.json()["events"]
    approvals = [e for e in events if e["operation"] == APPROVE]
    assert len(approvals) == 1, events
    approval = approvals[0]
    assert approval["principalSubject"] == f["boss"]["id"]
    assert approval["principalRoles"] == ["approver"]
    assert approval["outcome"] == "OK"
    assert approval["service"] == "timekeeping"
    assert approval["requestId"]  # the gateway's x-request-id
    # The submission is there too, older, by the consultant the token named.
    assert [e["operation"].rpartition("/")[2] for e in events][-1] == "SubmitTimeEntry"

    by_boss = await api.get("/v1/audit-events", params={"actor": f["boss"]["id"]}, headers=auditor)
    assert by_boss.status_code == 200, by_boss.text
    assert {e["principalSubject"] for e in by_boss.json()["events"]} == {f["boss"]["id"]}

    verified = await api.post("/v1/audit-events:verify", json={}, headers=auditor)
    assert verified.status_code == 200, verified.text
    result = verified.json()
    assert result["ok"] is True
    assert {"masterdata", "timekeeping"} <= {c["service"] for c in result["chains"]}

    viewer = await api.get("/v1/audit-events", headers=tokens.headers(identity.person("val@firm", "viewer")))
    assert viewer.status_code == 403, viewer.text

    elsewhere = tokens.headers(identity.person("otto@firm", "auditor", legal_entities=["some-other-entity"]))
    theirs = await api.get("/v1/audit-events", params={"resourceId": entry["id"]}, headers=elsewhere)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json().get("events", []) == []


async def test_requests_the_gateway_refuses_are_in_the_trail_without_their_token(
    api: httpx.AsyncClient, stack: Stack, instant: dt.datetime
) -> None:
    tokens = stack.tokens(clock_for(instant))
    issuer = stack.issuer(clock_for(instant))
    elsewhere = issuer.mint("mallory", ["finance"], ["*"], dt.timedelta(minutes=5), "another-app")
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as anonymous:
        missing = await anonymous.post("/v1/invoices/inv-1:post", json={})
        wrong = await anonymous.get("/v1/invoices", headers={"Authorization": f"Bearer {elsewhere}"})
    assert (missing.status_code, wrong.status_code) == (401, 401)

    auditor = tokens.headers(identity.person("audrey@firm", "auditor"))
    wanted = {(missing.headers["x-request-id"], "missing"), (wrong.headers["x-request-id"], "wrong_audience")}
    async with asyncio.timeout(20):  # reported in the background, after the 401 went out
        while True:
            listed = await api.get("/v1/audit-events", params={"resourceType": "refusal"}, headers=auditor)
            assert listed.status_code == 200, listed.text
            events = listed.json().get("events", [])
            seen = {(e["resourceId"], e["changes"]["reason"]["after"]) for e in events}
            if wanted <= seen:
                break
            await asyncio.sleep(0.2)
    ours = [e for e in events if e["resourceId"] in {r for r, _ in wanted}]
    assert {e["principalSubject"] for e in ours} == {"service:gateway"}
    post = next(e for e in ours if e["changes"]["reason"]["after"] == "missing")
    assert post["changes"]["path"]["after"] == "/v1/invoices/inv-1:post"
    assert post["changes"]["operation"]["after"] == "accrue.billing.v1.BillingService/PostInvoice"
    assert elsewhere not in listed.text
