"""The thin slice through REST on the running stack: master data to a draft invoice, with KPIs.

Every hop is real: gateway → gRPC → PostgreSQL, outbox → NATS JetStream → consumers.
"""

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

Firm = Callable[[str], Awaitable[dict[str, Any]]]


async def kpis(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/v1/kpis")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for_unbilled(
    api: httpx.AsyncClient, legal_entity_id: str, hours: str, within: float = 20
) -> None:
    """Poll /v1/kpis until the legal entity's unbilled approved hours equal hours."""
    last: Any = None
    try:
        async with asyncio.timeout(within):
            while True:
                entities = {e["legalEntityId"]: e for e in (await kpis(api))["byLegalEntity"]}
                last = entities.get(legal_entity_id, {}).get("unbilledApprovedHours", "0.00")
                if Decimal(last) == Decimal(hours):
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"unbilled hours stayed {last}, expected {hours}") from None


async def submit_and_approve(
    api: httpx.AsyncClient, f: dict[str, Any], day: str, hours: str
) -> dict[str, Any]:
    submitted = await api.post(
        "/v1/time-entries",
        json={
            "consultantId": f["dev"]["id"],
            "projectId": f["project"]["id"],
            "workDate": day,
            "hours": hours,
            "notes": "Sprint work",
        },
    )
    assert submitted.status_code == 200, submitted.text
    entry = submitted.json()
    assert entry["status"] == "TIME_ENTRY_STATUS_PENDING_APPROVAL", entry["violations"]
    assert entry["approverId"] == f["boss"]["id"]
    approved = await api.post(f"/v1/time-entries/{entry['id']}:approve", json={"approverId": f["boss"]["id"]})
    assert approved.status_code == 200, approved.text
    result: dict[str, Any] = approved.json()
    assert result["status"] == "TIME_ENTRY_STATUS_APPROVED"
    return result


async def test_time_flows_from_submission_to_a_draft_invoice(api: httpx.AsyncClient, firm: Firm) -> None:
    f = await firm("-slice")
    le = f["le"]["id"]

    # Validation: a rule broken is a REJECTED entry with its reason codes, not an error.
    rejected = await api.post(
        "/v1/time-entries",
        json={
            "consultantId": f["dev"]["id"],
            "projectId": f["project"]["id"],
            "workDate": "2025-06-02",
            "hours": "8",
        },
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "TIME_ENTRY_STATUS_REJECTED"
    assert {v["code"] for v in rejected.json()["violations"]} >= {"DATE_OUTSIDE_PROJECT", "NO_ASSIGNMENT"}

    # Anyone but the resolved approver is refused.
    pending = (
        await api.post(
            "/v1/time-entries",
            json={
                "consultantId": f["dev"]["id"],
                "projectId": f["project"]["id"],
                "workDate": "2026-11-03",
                "hours": "7.5",
            },
        )
    ).json()
    denied = await api.post(f"/v1/time-entries/{pending['id']}:approve", json={"approverId": f["dev"]["id"]})
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("application/problem+json")

    queue = (await api.get("/v1/approvals", params={"approverId": f["boss"]["id"]})).json()
    assert [e["id"] for e in queue["timeEntries"]] == [pending["id"]]
    approved = await api.post(
        f"/v1/time-entries/{pending['id']}:approve", json={"approverId": f["boss"]["id"]}
    )
    assert approved.json()["status"] == "TIME_ENTRY_STATUS_APPROVED"

    await wait_for_unbilled(api, le, "7.50")
    figures = next(e for e in (await kpis(api))["byLegalEntity"] if e["legalEntityId"] == le)
    assert figures["unbilledApprovedValue"] == [{"currency": "GBP", "amount": "1125.00"}]

    run = await api.post(
        "/v1/billing-runs", json={"periodStart": "2026-11-01", "periodEnd": "2026-11-30", "legalEntityId": le}
    )
    assert run.status_code == 200, run.text
    (invoice,) = run.json()["invoices"]
    assert invoice["status"] == "INVOICE_STATUS_DRAFT"
    assert (invoice["customerId"], invoice["contractId"], invoice["currency"]) == (
        f["cu"]["id"],
        f["contract"]["id"],
        "GBP",
    )
    (line,) = invoice["lines"]
    assert (line["quantity"], line["unitPrice"], line["amount"]) == ("7.50", "150.00", "1125.00")
    assert line["sourceTimeEntryIds"] == [pending["id"]]
    assert invoice["total"] == "1125.00"

    fetched = (await api.get(f"/v1/invoices/{invoice['id']}")).json()
    assert fetched["total"] == "1125.00"
    await wait_for_unbilled(api, le, "0")


async def test_an_idempotency_key_makes_a_retried_write_happen_once(api: httpx.AsyncClient) -> None:
    body = {"code": "IDEM", "name": "Retried"}
    first = await api.post("/v1/labor-categories", json=body, headers={"Idempotency-Key": "retry-1"})
    again = await api.post("/v1/labor-categories", json=body, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await api.post(
        "/v1/labor-categories", json={"code": "IDEM2", "name": "x"}, headers={"Idempotency-Key": "retry-1"}
    )
    assert other.status_code == 422
    listed = (await api.get("/v1/labor-categories", params={"code": "IDEM"})).json()
    assert len(listed["laborCategories"]) == 1


async def test_a_killed_service_loses_nothing_and_bills_nothing_twice(
    api: httpx.AsyncClient, firm: Firm, stack: Stack
) -> None:
    f = await firm("-crash")
    le = f["le"]["id"]
    # Billing is down (kill -9) while time is approved: the events wait in JetStream.
    stack.kill("billing")
    first = await submit_and_approve(api, f, "2026-11-09", "8")
    # Timekeeping is killed right after an approval commits, perhaps before its relay published it.
    second = await submit_and_approve(api, f, "2026-11-10", "6.25")
    stack.kill("timekeeping")
    stack.start("timekeeping")
    stack.start("billing")
    await wait_for_unbilled(api, le, "14.25")

    async def billing_run() -> dict[str, Any]:
        response = await api.post(
            "/v1/billing-runs",
            json={"periodStart": "2026-11-01", "periodEnd": "2026-11-30", "legalEntityId": le},
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    # The billing consumer catches up on its own; poll the run until both entries are on it.
    async with asyncio.timeout(20):
        while True:
            run = await billing_run()
            billed = {
                i for inv in run["invoices"] for line in inv["lines"] for i in line["sourceTimeEntryIds"]
            }
            if billed == {first["id"], second["id"]}:
                break
            await asyncio.sleep(0.2)
    stack.kill("billing")
    stack.start("billing")
    again = await billing_run()
    assert [i["id"] for i in again["invoices"]] == [i["id"] for i in run["invoices"]]
    total = sum(Decimal(inv["total"]) for inv in again["invoices"])
    assert total == Decimal("14.25") * Decimal("150.00")
    await wait_for_unbilled(api, le, "0")
