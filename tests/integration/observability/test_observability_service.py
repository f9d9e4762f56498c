"""The observability service on real PostgreSQL and JetStream: events in, KPIs and metrics out.

Events are published the way producers publish them (protobuf body, DESIGN §5 headers), so the
service is tested against the contracts, not against the other services. The service runs on
the suite's pinned clock; every time in the events is relative to that instant (`instant`).
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import httpx
import nats
import pytest
from google.protobuf.message import Message

from accrue.billing.v1 import resources_pb2 as bl
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.events.v1 import masterdata_events_pb2 as mev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.observability.v1 import observability_service_pb2 as api
from accrue.observability.v1 import observability_service_pb2_grpc as api_grpc
from accrue.runtime.clock import local_date, local_midnight
from accrue.runtime.server import RunningService
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

pytestmark = [pytest.mark.integration, pytest.mark.dates]


class Env:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@pytest.fixture
async def env(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    nats_url: str,
    instant: dt.datetime,
) -> AsyncIterator[Any]:
    service = await start_service(
        "observability",
        metrics_interval_seconds=0.2,
        reconciliation_interval_seconds=0,
        clock_start=instant,
    )
    nc = await nats.connect(nats_url)
    assert service.metrics is not None
    yield Env(
        stub=api_grpc.ObservabilityServiceStub(channel_to(service)),
        js=nc.jetstream(),
        metrics_url=f"http://127.0.0.1:{service.metrics.port}/metrics",
        now=instant,
    )
    await nc.close()


async def publish(e: Any, event_type: str, key: str, message: Message) -> None:
    await e.js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": str(uuid.uuid4()),
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": e.now.isoformat(),
        },
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


def entry(
    now: dt.datetime, le: str, hours: str, approved_days_ago: float, submitted_hours_before: float
) -> tk.TimeEntry:
    return approved_at(now - dt.timedelta(days=approved_days_ago), le, hours, submitted_hours_before)


def approved_at(at: dt.datetime, le: str, hours: str, submitted_hours_before: float = 1) -> tk.TimeEntry:
    e = tk.TimeEntry(
        id=str(uuid.uuid4()),
        project_id=f"proj-{le}",
        legal_entity_id=le,
        work_date=at.date().isoformat(),
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        indicative_rate=types_pb2.Money(currency="GBP", amount="150.00"),
    )
    e.approve_time.FromDatetime(at)
    e.create_time.FromDatetime(at - dt.timedelta(hours=submitted_hours_before))
    return e


def invoice(now: dt.datetime, le: str, entries: list[tk.TimeEntry], status: int, amount: str) -> bl.Invoice:
    inv = bl.Invoice(
        id=str(uuid.uuid4()),
        legal_entity_id=le,
        currency="GBP",
        status=status,
        subtotal=amount,
        lines=[
            bl.InvoiceLine(
                kind=bl.INVOICE_LINE_KIND_TIME,
                project_id=entries[0].project_id,
                amount=amount,
                source_time_entry_ids=[e.id for e in entries],
            )
        ],
    )
    inv.create_time.FromDatetime(now)
    return inv


async def kpis_of(e: Any, le: str) -> api.LegalEntityKpis | None:
    reply = await e.stub.GetKpis(api.GetKpisRequest(legal_entity_id=le))
    return next((k for k in reply.kpis.by_legal_entity if k.legal_entity_id == le), None)


async def test_unbilled_work_ages_leaves_with_its_invoice_and_lags_are_measured(env: Any) -> None:
    le = f"le-{uuid.uuid4().hex[:8]}"
    now = env.now
    fresh, old, billed = entry(now, le, "3", 1, 2), entry(now, le, "5", 40, 24), entry(now, le, "8", 10, 1)
    # Billable time on a fixed-fee line has no hourly rate: milestones bill it, so it is never
    # unbilled work. Published first on the same subject, so it is in before the others count.
    fixed_fee = entry(now, le, "7", 50, 1)
    fixed_fee.ClearField("indicative_rate")
    for e in (fixed_fee, fresh, old, billed):
        await publish(env, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))

    async def unbilled(hours: str) -> bool:
        k = await kpis_of(env, le)
        return k is not None and Decimal(k.unbilled_approved_hours) == Decimal(hours)

    await eventually(lambda: unbilled("16"))
    drafted = invoice(now, le, [billed], bl.INVOICE_STATUS_DRAFT, "1200.00")
    await publish(env, "billing.invoice.drafted", le, bev.InvoiceDrafted(invoice=drafted))
    await eventually(lambda: unbilled("8"))

    k = await kpis_of(env, le)
    assert k is not None
    assert [m.amount for m in k.unbilled_approved_value] == ["1200.00"]
    assert {b.age: b.hours for b in k.unbilled_by_age} == {"0-7d": "3.00", "31-60d": "5.00"}
    assert k.oldest_unbilled_age_days == 40

    approved = drafted
    approved.status = bl.INVOICE_STATUS_APPROVED
    await publish(env, "billing.invoice.approved", le, bev.InvoiceApproved(invoice=approved))

    async def backlog(n: int) -> bool:
        k = await kpis_of(env, le)
        return k is not None and k.erp_posting_backlog == n

    await eventually(lambda: backlog(1))
    posted = bl.Invoice()
    posted.CopyFrom(approved)
    posted.status = bl.INVOICE_STATUS_POSTED
    posted.post_time.FromDatetime(now)
    await publish(env, "billing.invoice.posted", le, bev.InvoicePosted(invoice=posted))
    await eventually(lambda: backlog(0))
    failed = bl.BillingException(
        id=str(uuid.uuid4()), kind=bl.BILLING_EXCEPTION_KIND_ERP_POST_FAILED, legal_entity_id=le
    )
    await publish(
        env,
        "billing.exception.raised",
        le,
        bev.BillingExceptionRaised(billing_exception=failed, legal_entity_id=le),
    )

    async def failure_open() -> bool:
        k = await kpis_of(env, le)
        return k is not None and k.erp_posting_failures_open == 1

    await eventually(failure_open)

    # The same lags as JSON-able KPIs, over the last 30 days (the 40-day-old approval is out).
    k = await kpis_of(env, le)
    assert k is not None
    assert (
        k.approval_lag.entry_count,
        k.approval_lag.median.ToSeconds(),
        k.approval_lag.p90.ToSeconds(),
    ) == (
        2,
        int(1.5 * 3600),
        int(1.9 * 3600),
    )
    assert (k.invoice_lag_draft.entry_count, k.invoice_lag_draft.median.ToSeconds()) == (1, 10 * 86400)
    assert (k.invoice_lag_posted.entry_count, k.invoice_lag_posted.p90.ToSeconds()) == (1, 10 * 86400)
    reply = await env.stub.GetKpis(api.GetKpisRequest())
    (billing_consumer,) = [c for c in reply.kpis.consumers if c.consumer == "observability-billing"]
    assert billing_consumer.delivered >= 4

    expected = [
        f'accrue_unbilled_approved_hours{{age="31-60d",legal_entity="{le}"}} 5.0',
        # Approval lag (every approval, fixed-fee time too): submitted 1 h, 2 h, 24 h and 1 h before.
        f'accrue_approval_lag_seconds_count{{legal_entity="{le}"}} 4.0',
        f'accrue_approval_lag_seconds_sum{{legal_entity="{le}"}} {28 * 3600}.0',
        # Invoice lag: one entry, approved 10 days before its draft and its posting.
        f'accrue_invoice_lag_seconds_count{{legal_entity="{le}",stage="draft"}} 1.0',
        f'accrue_invoice_lag_seconds_count{{legal_entity="{le}",stage="posted"}} 1.0',
        f'accrue_erp_posting_failures_total{{legal_entity="{le}"}} 1.0',
        f'accrue_erp_postings_total{{legal_entity="{le}"}} 1.0',
        f'accrue_erp_posting_backlog_invoices{{legal_entity="{le}"}} 0.0',
    ]
    text = ""
    async with httpx.AsyncClient() as http:

        async def exported() -> bool:
            # The gauges are refreshed by a periodic export: wait until one has written them all.
            nonlocal text
            text = (await http.get(env.metrics_url)).text
            return all(line in text for line in expected)

        try:
            await eventually(exported)
        except TimeoutError:
            missing = [line for line in expected if line not in text]
            raise AssertionError(f"not exported: {missing}") from None
    assert 'accrue_sync_backlog_messages{consumer="observability-billing",stream="BILLING"}' in text


async def test_a_credit_note_does_not_bill_the_entries_it_names_and_a_void_releases_them(env: Any) -> None:
    le = f"le-{uuid.uuid4().hex[:8]}"
    e = entry(env.now, le, "4", 3, 1)
    await publish(env, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))

    async def unbilled(hours: str) -> bool:
        k = await kpis_of(env, le)
        return k is not None and Decimal(k.unbilled_approved_hours) == Decimal(hours)

    await eventually(lambda: unbilled("4"))
    credit = invoice(env.now, le, [e], bl.INVOICE_STATUS_DRAFT, "-600.00")
    credit.lines[0].kind = bl.INVOICE_LINE_KIND_CREDIT
    draft = invoice(env.now, le, [e], bl.INVOICE_STATUS_DRAFT, "600.00")
    await publish(env, "billing.invoice.drafted", le, bev.InvoiceDrafted(invoice=draft))
    await eventually(lambda: unbilled("0"))
    # The credit note names the entry but does not take it over: voiding the draft releases it.
    await publish(env, "billing.invoice.drafted", le, bev.InvoiceDrafted(invoice=credit))
    draft.status = bl.INVOICE_STATUS_VOID
    await publish(env, "billing.invoice.voided", le, bev.InvoiceVoided(invoice=draft, reason="wrong"))
    await eventually(lambda: unbilled("4"))


async def test_forecast_variance_against_the_previous_version_and_actuals(env: Any) -> None:
    le = f"le-{uuid.uuid4().hex[:8]}"
    this_month = env.now.strftime("%Y-%m")  # in UTC: the legal entity has no zone of its own
    last_month = (env.now.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")

    def version(vid: str, previous: str, totals: list[tuple[str, str, str]], at: dt.datetime) -> Any:
        v = fev.ForecastVersionPublished(
            version_id=vid,
            previous_version_id=previous,
            totals=[
                fev.ForecastVersionTotal(
                    legal_entity_id=le, month=m, currency="GBP", forecast_revenue=f, actual_revenue=a
                )
                for m, f, a in totals
            ],
        )
        v.create_time.FromDatetime(at)
        return v

    first, second = f"v1-{le}", f"v2-{le}"
    later = env.now + dt.timedelta(days=400)  # newest of every version in the test run
    await publish(
        env,
        "forecast.version.published",
        first,
        version(first, "", [(last_month, "1000.00", "0"), (this_month, "2000.00", "0")], later),
    )
    await publish(
        env,
        "forecast.version.published",
        second,
        version(
            second,
            first,
            [(last_month, "900.00", "900.00"), (this_month, "2500.00", "0")],
            later + dt.timedelta(seconds=1),
        ),
    )

    async def variance() -> api.ForecastVariance | None:
        k = await kpis_of(env, le)
        found = [v for v in k.forecast_variance if v.version_id == second] if k else []
        return found[0] if found else None

    await eventually(lambda: _is_not_none(variance()))
    v = await variance()
    assert v is not None
    assert (v.latest_forecast, v.previous_forecast, v.against_previous) == ("3400.00", "3000.00", "400.00")
    # The latest version was taken 400 days ahead, so both months have closed by then.
    assert v.against_actuals == "-2100.00"


async def _is_not_none(value: Awaitable[object]) -> bool:
    return await value is not None


async def test_unbilled_work_ages_in_days_of_the_legal_entitys_time_zone(env: Any) -> None:
    le = f"le-{uuid.uuid4().hex[:8]}"
    zone = "Australia/Brisbane"
    await publish(
        env,
        "md.legal_entity.upserted",
        le,
        mev.LegalEntityUpserted(
            legal_entity=md.LegalEntity(id=le, code=le, name="Acme AU", base_currency="AUD", time_zone=zone)
        ),
    )
    # Half an hour either side of the Brisbane midnight that began the day 7 days ago: 8 and 7
    # days old there, whatever UTC's dates say.
    start_of_week = local_midnight(local_date(env.now, zone) - dt.timedelta(days=7), zone)
    older = approved_at(start_of_week - dt.timedelta(minutes=30), le, "5")
    newer = approved_at(start_of_week + dt.timedelta(minutes=30), le, "3")
    for e in (older, newer):
        await publish(env, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))

    async def aged() -> bool:
        k = await kpis_of(env, le)
        return k is not None and {b.age: b.hours for b in k.unbilled_by_age} == {
            "0-7d": "3.00",
            "8-30d": "5.00",
        }

    try:
        await eventually(aged)
    except TimeoutError:
        raise AssertionError(f"ages: {await kpis_of(env, le)}") from None
    k = await kpis_of(env, le)
    assert k is not None
    assert k.oldest_unbilled_age_days == 8
