"""Reconciliation on a schedule: with nobody asking, a difference becomes a metric and an event.

The stack runs with ACCRUE_OBSERVABILITY_RECONCILIATION_INTERVAL_SECONDS=1 (each legal entity's
current and previous calendar months every second); the test never calls /v1/reconciliation.
Its processes' clocks start at the suite's pinned instant, so "today" is the legal entity's date
at that instant (`instant`), never the date the suite happens to run on.
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from accrue.billing.v1 import resources_pb2 as bl
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import observability_events_pb2 as oev
from accrue.runtime.clock import local_date
from accrue.testing.plugin import TEST_STACK_ENV
from accrue.testing.servers import SecuredNats
from accrue.testing.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.dates]


@pytest.fixture(scope="module")
def stack(
    module_database_url: str,
    module_nats: SecuredNats,
    tmp_path_factory: pytest.TempPathFactory,
    instant: dt.datetime,
) -> Iterator[Stack]:
    """The stack (as the plugin's: its clocks start at the pinned instant, as the test's does),
    observability reconciling every second."""
    with Stack.from_catalogue(
        database_url=module_database_url,
        nats_url=module_nats.url,
        nats_passwords=module_nats.passwords,
        log_dir=tmp_path_factory.mktemp("scheduled"),
        clock_start=instant,
        extra_env={**TEST_STACK_ENV, "ACCRUE_OBSERVABILITY_RECONCILIATION_INTERVAL_SECONDS": "1"},
    ) as running:
        yield running


async def test_a_difference_found_on_schedule_is_a_metric_and_an_event(
    api: httpx.AsyncClient,
    firm: Callable[[str], Awaitable[dict[str, Any]]],
    stack: Stack,
    module_nats_url: str,
    instant: dt.datetime,
) -> None:
    f = await firm("-sched")
    le, project = f["le"]["id"], f["project"]["id"]
    today = local_date(instant, f["le"].get("timeZone", ""))
    body = {"consultantId": f["dev"]["id"], "projectId": project, "workDate": today.isoformat(), "hours": "2"}
    entry = (await api.post("/v1/time-entries", json=body)).json()
    approved = await api.post(f"/v1/time-entries/{entry['id']}:approve", json={"approverId": f["boss"]["id"]})
    assert approved.status_code == 200, approved.text

    # An ERP confirmation of that entry, which billing holds as unbilled.
    stray = bl.Invoice(
        id=str(uuid.uuid4()),
        number="STRAY-2",
        legal_entity_id=le,
        currency="GBP",
        status=bl.INVOICE_STATUS_POSTED,
        period_start=today.replace(day=1).isoformat(),
        period_end=today.isoformat(),
        subtotal="300.00",
        lines=[
            bl.InvoiceLine(
                kind=bl.INVOICE_LINE_KIND_TIME,
                project_id=project,
                amount="300.00",
                source_time_entry_ids=[entry["id"]],
            )
        ],
    )
    stray.post_time.FromDatetime(instant)
    stray.create_time.FromDatetime(instant)
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
        metric = f'accrue_reconciliation_differences{{legal_entity="{le}"}} 1.0'
        async with httpx.AsyncClient() as http, asyncio.timeout(30):
            while metric not in (await http.get(stack.metrics_url("observability"))).text:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        # The gauge is set as the run commits; the event leaves through the outbox a moment
        # later (its relay runs on the same event loop), so the stream may not have it yet.
        subject = f"observability.reconciliation.mismatch_found.{le}"
        async with asyncio.timeout(10):
            while True:
                try:
                    msg = await js.get_last_msg("OBSERVABILITY", subject)
                    break
                except NotFoundError:
                    await asyncio.sleep(0.1)
    finally:
        await nc.close()
    event = oev.ReconciliationMismatchFound.FromString(msg.data)
    assert event.period_start == today.replace(day=1).isoformat()
    assert entry["id"] in {d.time_entry_id for p in event.reconciliation.projects for d in p.differences}
    # The KPIs carry it too.
    kpis = (await api.get("/v1/kpis", params={"legalEntityId": le})).json()
    assert [int(e.get("reconciliationDifferences", 0)) for e in kpis["byLegalEntity"]] == [1]
