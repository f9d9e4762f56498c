"""Reconciliation through REST on the running stack: approved, billed, posted — then a difference.

Timekeeping and billing answer over gRPC; the ERP's confirmations come from the BILLING stream.
The difference is made the way it happens in production: an ERP confirmation for an entry that
billing still holds as unbilled (here published by hand, as a confused adapter would).
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
import pytest

from accrue.billing.v1 import resources_pb2 as bl
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import observability_events_pb2 as oev
from accrue.observability.v1 import resources_pb2 as res
from accrue.testing.rest import approved_time, billed, ok
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

Firm = Callable[[str], Awaitable[dict[str, Any]]]
FINANCE = {"actorId": "finance-lead"}
PERIOD = {"periodStart": "2026-11-01", "periodEnd": "2026-11-30"}


async def reconciliation_until(
    api: httpx.AsyncClient, le: str, done: Callable[[dict[str, Any]], bool], within: float = 30
) -> dict[str, Any]:
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(within):
            while True:
                last = await ok(api.get("/v1/reconciliation", params={**PERIOD, "legalEntityId": le}))
                if done(last):
                    return last
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"reconciliation stayed {last}") from None


def figures(stage: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
    return (
        int(stage.get("entryCount", 0)),
        stage.get("hours", ""),
        {m["currency"]: m["amount"] for m in stage.get("value", [])},
    )


async def test_stages_agree_then_a_confirmation_billing_does_not_know_is_named(
    api: httpx.AsyncClient, firm: Firm, stack: Stack, module_nats_url: str, instant: dt.datetime
) -> None:
    f = await firm("-recon")
    le, project = f["le"]["id"], f["project"]["id"]
    first = await approved_time(api, f, "2026-11-10", "6")
    second = await approved_time(api, f, "2026-11-11", "2")
    (draft,) = await billed(api, le, {first["id"], second["id"]})
    await ok(api.post(f"/v1/invoices/{draft['id']}:approve", json=FINANCE))
    await ok(api.post(f"/v1/invoices/{draft['id']}:post", json=FINANCE))
    wip = await approved_time(api, f, "2026-11-12", "3")

    def settled(report: dict[str, Any]) -> bool:
        entities = report.get("legalEntities", [])
        return (
            report.get("matched", False)
            and len(entities) == 1
            and figures(entities[0]["erp"])[0] == 2
            and figures(entities[0]["billing"])[0] == 3
        )

    report = await reconciliation_until(api, le, settled)
    (entity,) = report["legalEntities"]
    assert entity["legalEntityId"] == le
    assert figures(entity["approved"]) == (3, "11.00", {"GBP": "1650.00"})
    assert figures(entity["billing"]) == (3, "11.00", {"GBP": "1650.00"})
    assert figures(entity["billingPosted"]) == (2, "8.00", {"GBP": "1200.00"})
    assert figures(entity["erp"]) == (2, "8.00", {"GBP": "1200.00"})
    assert [p["projectId"] for p in entity["projects"]] == [project]

    # An ERP confirmation of the entry billing still holds as unbilled.
    stray = bl.Invoice(
        id=str(uuid.uuid4()),
        legal_entity_id=le,
        currency="GBP",
        status=bl.INVOICE_STATUS_POSTED,
        subtotal="450.00",
        lines=[
            bl.InvoiceLine(
                kind=bl.INVOICE_LINE_KIND_TIME,
                project_id=project,
                amount="450.00",
                source_time_entry_ids=[wip["id"]],
            )
        ],
    )
    stray.post_time.FromDatetime(instant)
    # A whole invoice, as billing would publish it (forecasting reads its period too).
    stray.create_time.FromDatetime(instant)
    stray.period_start, stray.period_end, stray.number = "2026-11-01", "2026-11-30", "STRAY-1"
    nc = await nats.connect(module_nats_url)
    try:
        js = nc.jetstream()
        await js.publish(
            f"billing.invoice.posted.{le}",
            bev.InvoicePosted(invoice=stray).SerializeToString(),
            headers={
                "Nats-Msg-Id": str(uuid.uuid4()),
                "Accrue-Event-Type": "billing.invoice.posted",
                "Accrue-Schema": "accrue.events.v1.InvoicePosted",
                "Accrue-Occurred-At": instant.isoformat(),
            },
        )
        report = await reconciliation_until(api, le, lambda r: not r.get("matched", True))
        assert int(report["differenceCount"]) == 1
        (entity,) = report["legalEntities"]
        (drill,) = entity["projects"]
        assert [
            (d["kind"], d["timeEntryId"], d["projectId"], d.get("expectedHours", ""), d["actualHours"])
            for d in drill["differences"]
        ] == [("RECONCILIATION_DIFFERENCE_KIND_CONFIRMED_NOT_POSTED", wip["id"], project, "", "3.00")]
        assert figures(entity["erp"]) == (3, "11.00", {"GBP": "1650.00"})

        # The mismatch is an event on the OBSERVABILITY stream. Runs while the figures were still
        # settling may have published mismatches of their own, and this run's event leaves through
        # the outbox a moment after the reply: wait for the newest to be this run's.
        event = oev.ReconciliationMismatchFound()
        async with asyncio.timeout(20):
            while not (
                event.reconciliation.projects
                and event.reconciliation.projects[0].differences
                and event.reconciliation.projects[0].differences[0].time_entry_id == wip["id"]
                and event.reconciliation.projects[0].differences[0].kind
                == res.RECONCILIATION_DIFFERENCE_KIND_CONFIRMED_NOT_POSTED
            ):
                await asyncio.sleep(0.1)
                try:
                    msg = await js.get_last_msg(
                        "OBSERVABILITY", f"observability.reconciliation.mismatch_found.{le}"
                    )
                except nats.js.errors.NotFoundError:
                    continue
                event = oev.ReconciliationMismatchFound.FromString(msg.data)
    finally:
        await nc.close()
    assert (event.period_start, event.reconciliation.legal_entity_id) == ("2026-11-01", le)
    (difference,) = event.reconciliation.projects[0].differences
    assert (difference.kind, difference.time_entry_id) == (
        res.RECONCILIATION_DIFFERENCE_KIND_CONFIRMED_NOT_POSTED,
        wip["id"],
    )
    # ... and a metric.
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(stack.metrics_url("observability"))).text
    assert f'accrue_reconciliation_differences{{legal_entity="{le}"}} 1.0' in metrics
    assert 'accrue_reconciliations_total{outcome="mismatched"}' in metrics


async def test_a_bad_period_is_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    answer = await api.get(
        "/v1/reconciliation", params={"periodStart": "2026-11-31", "periodEnd": "2026-11-01"}
    )
    assert answer.status_code == 400, answer.text
    assert [v["field"] for v in answer.json()["violations"]] == ["periodStart"]
