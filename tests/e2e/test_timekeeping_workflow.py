"""Timekeeping through the public REST API on the running stack: batch submit and decisions,
delegation, correcting invoiced time, period locks, and bad input that writes nothing."""

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from accrue.testing.rest import ok, problem

pytestmark = pytest.mark.e2e

Firm = Callable[[str], Awaitable[dict[str, Any]]]
PENDING, APPROVED = "TIME_ENTRY_STATUS_PENDING_APPROVAL", "TIME_ENTRY_STATUS_APPROVED"


def entry(f: dict[str, Any], day: str, hours: str, **extra: Any) -> dict[str, Any]:
    return {
        "consultantId": f["dev"]["id"],
        "projectId": f["project"]["id"],
        "workDate": day,
        "hours": hours,
        **extra,
    }


async def consultant(api: httpx.AsyncClient, f: dict[str, Any], code: str) -> dict[str, Any]:
    return await ok(
        api.post(
            "/v1/consultants",
            json={
                "code": code,
                "name": code,
                "legalEntityId": f["le"]["id"],
                "laborCategoryId": f["lc"]["id"],
                "activeFrom": "2020-01-01",
            },
        )
    )


async def test_a_batch_is_submitted_and_decided_entry_by_entry(api: httpx.AsyncClient, firm: Firm) -> None:
    f = await firm("-tk-batch")
    boss = f["boss"]["id"]
    reply = await ok(
        api.post(
            "/v1/time-entries:batchSubmit",
            json={
                "timeEntries": [
                    entry(f, "2026-11-02", "8", notes="build"),
                    entry(f, "2026-11-02", "8", notes="Build "),
                    entry(f, "2026-11-03", "7.3"),
                    entry(f, "2026-11-04", "eight"),
                    entry(f, "2026-11-05", "4"),
                ]
            },
        )
    )
    first, twin, odd, malformed, last = (r["timeEntry"] for r in reply["results"])
    assert [first["status"], twin["status"], last["status"]] == [PENDING, PENDING, PENDING]
    assert twin["likelyDuplicateOfId"] == first["id"]
    assert [v["code"] for v in odd["violations"]] == ["HOURS_NOT_QUARTER"]
    assert (malformed.get("id", ""), [v["code"] for v in malformed["violations"]]) == (
        "",
        ["INVALID_DECIMAL"],
    )

    decided = await ok(
        api.post("/v1/time-entries:batchApprove", json={"approverId": boss, "ids": [first["id"], odd["id"]]})
    )
    assert decided["results"][0]["timeEntry"]["status"] == APPROVED
    assert decided["results"][0]["timeEntry"]["decidedById"] == boss
    assert decided["results"][1]["error"] == {
        "code": "FAILED_PRECONDITION",
        "reason": "NOT_PENDING",
        "message": decided["results"][1]["error"]["message"],
    }
    declined = await ok(
        api.post(
            "/v1/time-entries:batchDecline",
            json={"approverId": boss, "ids": [twin["id"], last["id"]], "reason": "double entry"},
        )
    )
    assert [r["timeEntry"]["declineReason"] for r in declined["results"]] == ["double entry", "double entry"]
    queue = await ok(api.get("/v1/approvals", params={"approverId": boss}))
    assert queue["timeEntries"] == []


@pytest.mark.dates
async def test_a_delegate_approves_while_the_approver_is_away(
    api: httpx.AsyncClient, firm: Firm, instant: dt.datetime
) -> None:
    f = await firm("-tk-deleg")
    # The delegation covers the stack's today, whatever the run's pinned instant.
    back_from_leave = (instant + dt.timedelta(days=60)).date().isoformat()
    deputy = await consultant(api, f, "DEP-tk-deleg")
    pending = await ok(api.post("/v1/time-entries", json=entry(f, "2026-11-02", "6")))
    refused = await api.post(f"/v1/time-entries/{pending['id']}:approve", json={"approverId": deputy["id"]})
    assert problem(refused, 403)

    delegation = await ok(
        api.post(
            "/v1/approval-delegations",
            json={
                "delegatorId": f["boss"]["id"],
                "delegateId": deputy["id"],
                "startDate": "2026-11-01",
                "endDate": back_from_leave,
                "reason": "leave",
            },
        )
    )
    queue = await ok(api.get("/v1/approvals", params={"approverId": deputy["id"]}))
    assert [e["id"] for e in queue["timeEntries"]] == [pending["id"]]
    done = await ok(api.post(f"/v1/time-entries/{pending['id']}:approve", json={"approverId": deputy["id"]}))
    assert (done["status"], done["approverId"], done["decidedById"]) == (
        APPROVED,
        f["boss"]["id"],
        deputy["id"],
    )
    listed = await ok(api.get("/v1/approval-delegations", params={"delegateId": deputy["id"]}))
    assert [d["id"] for d in listed["approvalDelegations"]] == [delegation["id"]]
    bad = await api.post(
        "/v1/approval-delegations",
        json={
            "delegatorId": f["boss"]["id"],
            "delegateId": f["boss"]["id"],
            "startDate": "2026-12-31",
            "endDate": "2026-12-01",
        },
    )
    fields = {(v["field"], v["code"]) for v in problem(bad, 400)["violations"]}
    assert fields == {
        ("delegateId", "SELF_DELEGATION"),
        ("endDate", "INVALID_RANGE"),
    }


async def invoiced(api: httpx.AsyncClient, le: str, entry_id: str, within: float = 20) -> dict[str, Any]:
    """Run billing until the entry is on a draft invoice (billing takes approved time from events)."""
    async with asyncio.timeout(within):
        while True:
            run = await ok(
                api.post(
                    "/v1/billing-runs",
                    json={"periodStart": "2026-11-01", "periodEnd": "2026-11-30", "legalEntityId": le},
                )
            )
            for invoice in run["invoices"]:
                if any(entry_id in line.get("sourceTimeEntryIds", []) for line in invoice["lines"]):
                    return invoice
            await asyncio.sleep(0.2)


async def test_invoiced_time_is_reversed_and_replaced_never_edited(
    api: httpx.AsyncClient, firm: Firm
) -> None:
    f = await firm("-tk-rev")
    boss, le = f["boss"]["id"], f["le"]["id"]
    ref = {"system": "harvest", "id": "tk-rev-1"}
    original = await ok(api.post("/v1/time-entries", json=entry(f, "2026-11-09", "8", externalRef=ref)))
    await ok(api.post(f"/v1/time-entries/{original['id']}:approve", json={"approverId": boss}))
    invoice = await invoiced(api, le, original["id"])
    # Editing by resubmission is refused, invoiced or not: a correction is a reversal.
    edit = await api.post("/v1/time-entries", json=entry(f, "2026-11-09", "6", externalRef=ref))
    assert problem(edit, 409)
    assert original["id"] in edit.text

    fixed = entry(f, "2026-11-09", "6", externalRef=ref, notes="corrected")
    reply = await ok(
        api.post(
            f"/v1/time-entries/{original['id']}:reverse",
            json={"actorId": boss, "reason": "client disputed 2 hours", "replacement": fixed},
        )
    )
    assert (reply["original"]["status"], reply["original"]["hours"]) == ("TIME_ENTRY_STATUS_REVERSED", "8.00")
    assert reply["original"]["reversalReason"] == "client disputed 2 hours"
    reversal = reply["reversal"]
    assert (reversal["status"], reversal["hours"], reversal["reversesId"], reversal["workDate"]) == (
        APPROVED,
        "-8.00",
        original["id"],
        "2026-11-09",
    )
    assert (reply["replacement"]["status"], reply["replacement"]["replacesId"]) == (PENDING, original["id"])
    again = await api.post(
        f"/v1/time-entries/{original['id']}:reverse", json={"actorId": boss, "reason": "once more"}
    )
    assert problem(again, 422)["reason"] == "ALREADY_REVERSED"
    stored = await ok(api.get(f"/v1/time-entries/{original['id']}"))
    assert (stored["status"], stored["reversedById"]) == ("TIME_ENTRY_STATUS_REVERSED", reversal["id"])
    assert invoice["status"] == "INVOICE_STATUS_DRAFT"


async def test_a_locked_period_is_reopened_with_a_reason_on_record(
    api: httpx.AsyncClient, firm: Firm
) -> None:
    f = await firm("-tk-lock")
    boss, le = f["boss"]["id"], f["le"]["id"]
    approved = await ok(api.post("/v1/time-entries", json=entry(f, "2026-10-28", "8")))
    await ok(api.post(f"/v1/time-entries/{approved['id']}:approve", json={"approverId": boss}))
    lock = await ok(
        api.post(
            "/v1/period-locks",
            json={
                "legalEntityId": le,
                "lockedThrough": "2026-10-31",
                "reason": "October closed",
                "lockedById": "cfo",
            },
        )
    )
    late = await ok(api.post("/v1/time-entries", json=entry(f, "2026-10-29", "8")))
    assert [v["code"] for v in late["violations"]] == ["PERIOD_LOCKED"]
    blocked = await api.post(
        f"/v1/time-entries/{approved['id']}:reverse", json={"actorId": boss, "reason": "x"}
    )
    assert problem(blocked, 422)["reason"] == "PERIOD_LOCKED"
    no_reason = await api.post(f"/v1/period-locks/{lock['id']}:reopen", json={"actorId": "cfo"})
    assert {v["field"] for v in problem(no_reason, 400)["violations"]} == {"reason"}
    reopened = await ok(
        api.post(
            f"/v1/period-locks/{lock['id']}:reopen", json={"actorId": "cfo", "reason": "late correction"}
        )
    )
    assert (reopened["active"], reopened["reopenedById"], reopened["reopenReason"]) == (
        False,
        "cfo",
        "late correction",
    )
    await ok(api.post(f"/v1/time-entries/{approved['id']}:reverse", json={"actorId": boss, "reason": "x"}))
    trail = await ok(api.get("/v1/period-locks", params={"legalEntityId": le}))
    assert [(x["id"], x["active"], x["reopenReason"]) for x in trail["periodLocks"]] == [
        (lock["id"], False, "late correction")
    ]


async def test_a_malformed_entry_is_refused_with_every_field_and_writes_nothing(
    api: httpx.AsyncClient, firm: Firm
) -> None:
    f = await firm("-tk-bad")
    bad = await api.post(
        "/v1/time-entries",
        json={
            "consultantId": f["dev"]["id"],
            "workDate": "2026-02-30",
            "hours": "1e3",
            "externalRef": {"system": "x"},
        },
    )
    fields = {(v["field"], v["code"]) for v in problem(bad, 400)["violations"]}
    assert fields == {
        ("projectId", "REQUIRED"),
        ("workDate", "INVALID_DATE"),
        ("hours", "INVALID_DECIMAL"),
        ("externalRef", "INCOMPLETE"),
    }
    listed = await ok(api.get("/v1/time-entries", params={"consultantId": f["dev"]["id"]}))
    assert listed.get("timeEntries", []) == []
