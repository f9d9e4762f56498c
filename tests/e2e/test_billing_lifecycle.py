"""An invoice's life through REST on the running stack: run, approve, post (file ERP), crash, void.

Every hop is real: gateway → gRPC → PostgreSQL, time events over JetStream, the posting job in
the billing process, which is killed (-9) in the middle of posting.
"""

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing.identity import person
from accrue.testing.rest import approved_time, billed, ok
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

Firm = Callable[[str], Awaitable[dict[str, Any]]]
FINANCE = {"actorId": "finance-lead"}


async def wait_posted(api: httpx.AsyncClient, invoice_id: str, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            answer = await api.get(f"/v1/invoices/{invoice_id}")
            if answer.status_code == 200 and answer.json()["status"] == "INVOICE_STATUS_POSTED":
                body: dict[str, Any] = answer.json()
                return body
            await asyncio.sleep(0.2)


async def invoice_of(api: httpx.AsyncClient, entry_id: str, expected: str, within: float = 20) -> None:
    """Wait until timekeeping shows the entry billed by `expected` ("" for unbilled)."""
    seen = None
    try:
        async with asyncio.timeout(within):
            while True:
                seen = (await ok(api.get(f"/v1/time-entries/{entry_id}"))).get("invoiceId", "")
                if seen == expected:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"entry {entry_id} shows invoice {seen!r}, expected {expected!r}") from None


async def test_an_invoice_is_approved_posted_once_and_never_changes(
    api: httpx.AsyncClient, firm: Firm, stack: Stack, instant: dt.datetime
) -> None:
    f = await firm("-life")
    le = f["le"]["id"]
    entry = await approved_time(api, f, "2026-11-04", "6")
    (draft,) = await billed(api, le, {entry["id"]})
    assert (draft["status"], draft["total"], draft["roundingResidual"]) == (
        "INVOICE_STATUS_DRAFT",
        "900.00",
        "0",
    )

    # Who acts comes from the token: a body naming someone else is refused, naming the field,
    # and changes nothing.
    someone_else = await api.post(
        f"/v1/invoices/{draft['id']}:approve",
        json=FINANCE,
        headers=stack.tokens(clock_for(instant)).headers(person("finance-other", "finance")),
    )
    assert someone_else.status_code == 403, someone_else.text
    assert [v["field"] for v in someone_else.json()["violations"]] == ["actorId"]
    assert (await ok(api.get(f"/v1/invoices/{draft['id']}")))["status"] == "INVOICE_STATUS_DRAFT"
    early = await api.post(f"/v1/invoices/{draft['id']}:post", json=FINANCE)
    assert early.status_code == 422, early.text
    approved = await ok(api.post(f"/v1/invoices/{draft['id']}:approve", json=FINANCE))
    assert (approved["status"], approved["approvedBy"]) == ("INVOICE_STATUS_APPROVED", "finance-lead")

    # Post, and kill billing at once: the job is durable, the ERP document is made once.
    queued = await ok(api.post(f"/v1/invoices/{draft['id']}:post", json=FINANCE))
    assert queued["status"] in ("INVOICE_STATUS_APPROVED", "INVOICE_STATUS_POSTED")
    stack.kill("billing")
    stack.start("billing")
    posted = await wait_posted(api, draft["id"])
    assert (posted["number"], posted["total"], posted["posting"]["status"]) == (
        "000001",
        "900.00",
        "INVOICE_POSTING_STATUS_CONFIRMED",
    )
    exported = Path.cwd() / ".accrue" / "erp-files" / posted["erpDocumentId"]
    assert exported.exists(), exported
    assert len(list(exported.parent.glob(f"{draft['id']}.*"))) == 2  # the JSON and the CSV, once

    refused = await api.post(f"/v1/invoices/{draft['id']}:void", json={**FINANCE, "reason": "too late"})
    assert refused.status_code == 422, refused.text
    assert (await ok(api.get(f"/v1/invoices/{draft['id']}")))["status"] == "INVOICE_STATUS_POSTED"

    # The next invoice of the legal entity takes the next number: no gap, no repeat.
    later = await approved_time(api, f, "2026-11-05", "1")
    fresh = [i for i in await billed(api, le, {later["id"]}) if i["status"] == "INVOICE_STATUS_DRAFT"]
    (second,) = fresh
    await ok(api.post(f"/v1/invoices/{second['id']}:approve", json=FINANCE))
    await ok(api.post(f"/v1/invoices/{second['id']}:post", json=FINANCE))
    assert (await wait_posted(api, second["id"]))["number"] == "000002"


async def test_a_voided_draft_releases_its_time_to_the_next_run(api: httpx.AsyncClient, firm: Firm) -> None:
    f = await firm("-void")
    le = f["le"]["id"]
    entry = await approved_time(api, f, "2026-11-06", "2.25")
    (draft,) = await billed(api, le, {entry["id"]})
    await invoice_of(api, entry["id"], draft["id"])  # timekeeping learns it from billing's event
    no_reason = await api.post(f"/v1/invoices/{draft['id']}:void", json=FINANCE)
    assert no_reason.status_code == 400, no_reason.text
    voided = await ok(api.post(f"/v1/invoices/{draft['id']}:void", json={**FINANCE, "reason": "wrong rate"}))
    assert (voided["status"], voided["voidReason"]) == ("INVOICE_STATUS_VOID", "wrong rate")
    await invoice_of(api, entry["id"], "")  # unbilled again
    again = [i for i in await billed(api, le, {entry["id"]}) if i["status"] == "INVOICE_STATUS_DRAFT"]
    (redraft,) = again
    assert redraft["id"] != draft["id"]
    await invoice_of(api, entry["id"], redraft["id"])  # voided, then drafted again: the new one
    assert Decimal(redraft["total"]) == Decimal("2.25") * 150


async def test_the_exception_queue_and_cap_status_answer_through_rest(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/contract-lines/no-such-line/cap-status")
    assert missing.status_code == 404, missing.text
    queue = await ok(api.get("/v1/billing-exceptions", params={"status": "BILLING_EXCEPTION_STATUS_OPEN"}))
    assert all(e["status"] == "BILLING_EXCEPTION_STATUS_OPEN" for e in queue.get("billingExceptions", []))
    bad = await api.post(
        "/v1/billing-exceptions/00000000-0000-0000-0000-000000000000:resolve",
        json={**FINANCE, "resolution": "BILLING_EXCEPTION_RESOLUTION_WRITE_OFF"},
    )
    assert bad.status_code == 404, bad.text
