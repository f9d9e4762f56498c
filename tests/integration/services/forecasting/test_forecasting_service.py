"""Forecasting as a running service on real PostgreSQL and JetStream, next to real master data
and billing: the live forecast from events, versions, variance, accuracy and utilization.

Approved and reversed time arrive as the real protobuf events on the TIME stream with the
headers every producer sets; master data and invoices come from the running services.

The services run on the suite's pinned clock (the `instant` fixture). The firm's legal entity is
in Brisbane (UTC+10), so "today" and the current month are Brisbane's; the week scheduled is
derived from that day, never from the date the suite happens to run on.
"""

import asyncio
import calendar
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.db import create_engine
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.forecasting.v1 import forecasting_service_pb2 as fa
from accrue.forecasting.v1 import forecasting_service_pb2_grpc as fg
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.clock import local_date
from accrue.runtime.server import RunningService
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

pytestmark = [pytest.mark.integration, pytest.mark.dates]

FINANCE = "finance-1"
ZONE = "Australia/Brisbane"


@dataclass(frozen=True)
class Week:
    """The week Dev is assigned to P1: Monday to Friday of one month, its Wednesday a holiday."""

    monday: dt.date

    @classmethod
    def after(cls, today: dt.date) -> "Week":
        """The first such week starting a week or more after today: the services' clock ticks
        on from the pinned instant, and must not reach it during the test."""
        day = today + dt.timedelta(days=7)
        day += dt.timedelta(days=-day.weekday() % 7)
        while (day + dt.timedelta(days=4)).month != day.month:
            day += dt.timedelta(days=7)
        return cls(day)

    @property
    def holiday(self) -> dt.date:
        return self.monday + dt.timedelta(days=2)

    @property
    def friday(self) -> dt.date:
        return self.monday + dt.timedelta(days=4)

    @property
    def month(self) -> str:
        return f"{self.monday:%Y-%m}"


def month_of(day: dt.date) -> str:
    return f"{day:%Y-%m}"


class World:
    """The running services, a JetStream client, the seed firm and its dates."""

    def __init__(
        self,
        md_: Any,
        bl_: Any,
        fc_: Any,
        js: JetStreamContext,
        firm: dict[str, Any],
        db: str,
        instant: dt.datetime,
    ) -> None:
        self.md, self.bl, self.fc, self.js, self.f, self.database_url = md_, bl_, fc_, js, firm, db
        self.instant = instant
        # The legal entity's today at the pinned instant, and the week scheduled after it.
        self.today = local_date(instant, ZONE)
        self.week = Week.after(self.today)


@pytest.fixture
async def world(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    build_firm: Any,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
    instant: dt.datetime,
) -> AsyncIterator[World]:
    masterdata = await start_service("masterdata", clock_start=instant)
    billing = await start_service(
        "billing",
        masterdata_address=f"127.0.0.1:{masterdata.grpc_port}",
        erp_file_dir=tmp_path / "erp",
        posting_poll_seconds=0.05,
        erp_rate_per_second=100.0,
        schedule_interval_seconds=0,
        clock_start=instant,
    )
    forecasting = await start_service("forecasting", version_schedule_seconds=0, clock_start=instant)
    md_stub = mdg.MasterDataServiceStub(channel_to(masterdata))
    nc = await nats.connect(nats_url)
    firm = await build_firm(md_stub)
    # Before anything is scheduled: the firm's business dates are Brisbane's.
    await md_stub.UpdateLegalEntity(
        mda.UpdateLegalEntityRequest(
            id=firm["le"].id,
            legal_entity=md.LegalEntity(time_zone=ZONE),
            update_mask=FieldMask(paths=["time_zone"]),
        )
    )
    w = World(
        md_stub,
        blg.BillingServiceStub(channel_to(billing)),
        fg.ForecastingServiceStub(channel_to(forecasting)),
        nc.jetstream(),
        firm,
        database_url,
        instant,
    )
    # Dev works on P1 for the week, whose Wednesday is a holiday.
    await md_stub.CreateAssignment(
        mda.CreateAssignmentRequest(
            assignment=md.Assignment(
                project_id=firm["project"].id,
                consultant_id=firm["dev"].id,
                labor_category_id=firm["lc"].id,
                start_date=w.week.monday.isoformat(),
                end_date=w.week.friday.isoformat(),
                allocation_percent="100",
            )
        )
    )
    await md_stub.CreateCalendar(
        mda.CreateCalendarRequest(
            calendar=md.Calendar(
                code="UK",
                legal_entity_id=firm["le"].id,
                holidays=[md.Holiday(date=w.week.holiday.isoformat(), name="a holiday, for the test")],
            )
        )
    )
    # Every test starts with master data in the forecast: the week at the holiday's 4 days.
    await until_row(w, w.week.month, scheduled="5120.00", scheduled_hours="32.00")
    yield w
    await nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def publish(w: World, event_type: str, key: str, message: Message) -> None:
    """An event as every producer's outbox relay publishes it (docs/events.md)."""
    await w.js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": str(uuid.uuid4()),
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": w.instant.isoformat(),
        },
    )


def entry(w: World, day: str, hours: str, rate: str) -> tk.TimeEntry:
    e = tk.TimeEntry(
        id=str(uuid.uuid4()),
        consultant_id=w.f["dev"].id,
        project_id=w.f["project"].id,
        labor_category_id=w.f["lc"].id,
        work_date=day,
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        legal_entity_id=w.f["le"].id,
        customer_id=w.f["cu"].id,
        indicative_rate=types_pb2.Money(amount=rate, currency="GBP"),
    )
    e.approve_time.FromDatetime(w.instant)
    return e


async def approve(w: World, *entries: tk.TimeEntry) -> None:
    for e in entries:
        await publish(w, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))


async def forecast(w: World, **filters: str) -> fa.Forecast:
    return (await w.fc.GetForecast(fa.GetForecastRequest(**filters))).forecast


def row(f: fa.Forecast, month: str) -> fa.ForecastRow | None:
    return next((r for r in f.rows if r.month == month and r.project_id), None)


async def until_row(w: World, month: str, **expected: str) -> fa.ForecastRow:
    """Wait until the project's month shows the expected amounts (project currency)."""
    found: list[fa.ForecastRow] = []

    async def check() -> bool:
        r = row(await forecast(w, project_id=w.f["project"].id), month)
        if r is None:
            return False
        found[:] = [r]
        shown = {name: getattr(r.amounts, name, getattr(r, name, None)) for name in expected}
        return shown == expected

    try:
        await eventually(check)
    except TimeoutError:
        raise AssertionError(f"{month}: expected {expected}, last seen {found}") from None
    return found[0]


async def bill_and_post(w: World, start: str, end: str) -> bl.Invoice:
    run = (
        await w.bl.CreateBillingRun(
            bla.CreateBillingRunRequest(billing_run=bl.BillingRun(period_start=start, period_end=end))
        )
    ).billing_run
    (invoice,) = run.invoices
    invoice_id = invoice.id
    await w.bl.ApproveInvoice(bla.ApproveInvoiceRequest(id=invoice_id, actor_id=FINANCE))
    await w.bl.PostInvoice(bla.PostInvoiceRequest(id=invoice_id, actor_id=FINANCE))

    async def posted() -> bool:
        got = (await w.bl.GetInvoice(bla.GetInvoiceRequest(id=invoice_id))).invoice
        return bool(got.status == bl.INVOICE_STATUS_POSTED)

    await eventually(posted)
    return (await w.bl.GetInvoice(bla.GetInvoiceRequest(id=invoice_id))).invoice


async def settled(w: World) -> None:
    """Until the forecasting consumers have acked everything (a version's watermark is their
    ack floor, which follows the commit by a moment)."""

    async def check() -> bool:
        for stream, durable in (("TIME", "forecasting-time"), ("MD", "forecasting-md")):
            info = await w.js.consumer_info(stream, durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    await eventually(check)


async def published_versions(w: World) -> list[fev.ForecastVersionPublished]:
    sub = await w.js.pull_subscribe("forecast.version.published.>", stream="FORECAST")
    found = []
    try:
        while True:
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in batch:
                assert msg.headers is not None
                assert msg.headers["Accrue-Event-Type"] == "forecast.version.published"
                found.append(fev.ForecastVersionPublished.FromString(msg.data))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return found


async def test_approved_time_becomes_wip_then_revenue_and_assignments_are_scheduled(world: World) -> None:
    w = world
    lag_before = (
        REGISTRY.get_sample_value("accrue_forecast_refresh_lag_seconds_count", {"stream": "TIME"}) or 0
    )
    await approve(w, entry(w, "2026-11-02", "7.5", "150.00"), entry(w, "2026-11-16", "8", "160.00"))
    nov = await until_row(w, "2026-11", wip="2405.00", approved_hours="15.50")
    assert nov.currency == "GBP"
    assert (nov.base_amounts.currency, nov.base_amounts.wip, nov.base_amounts.fx_rate) == (
        "GBP",
        "2405.00",
        "1",
    )
    # 4 working days (the Wednesday is a holiday) x 8 h x 160.
    week = await until_row(w, w.week.month, scheduled="5120.00", scheduled_hours="32.00")
    assert week.amounts.forecast_revenue == "5120.00"
    lag_after = REGISTRY.get_sample_value("accrue_forecast_refresh_lag_seconds_count", {"stream": "TIME"})
    assert lag_after is not None
    assert lag_after >= lag_before + 2

    invoice = await bill_and_post(w, "2026-11-01", "2026-11-30")
    assert invoice.subtotal == "2405.00"
    nov = await until_row(w, "2026-11", wip="0.00", actual_revenue="2405.00")
    assert (nov.amounts.billed, nov.amounts.forecast_revenue) == ("0.00", "2405.00")

    f = await forecast(w, project_id=w.f["project"].id)
    (summary,) = f.projects
    assert (summary.approved_hours, summary.scheduled_hours, summary.eac_hours) == ("15.50", "32.00", "47.50")
    assert summary.eac_revenue == "7525.00"
    legal = {t.month: t.amounts.forecast_revenue for t in f.totals if t.scope == fa.ROLLUP_SCOPE_LEGAL_ENTITY}
    assert legal == {"2026-11": "2405.00", w.week.month: "5120.00"}
    assert f.HasField("as_of_time")
    # Scheduled time starts on the project's legal entity's today: Brisbane's, not UTC's.
    assert f.as_of_date == w.today.isoformat()


async def test_versions_are_immutable_snapshots_compared_by_volume_rate_and_timing(world: World) -> None:
    w = world
    await approve(w, entry(w, "2026-10-15", "8", "150.00"))
    await until_row(w, "2026-10", wip="1200.00")
    await until_row(w, w.week.month, scheduled="5120.00")
    await settled(w)

    first = (await w.fc.CreateForecastVersion(fa.CreateForecastVersionRequest())).forecast_version
    assert first.kind == fa.FORECAST_VERSION_KIND_ON_DEMAND
    assert first.watermark["TIME"] >= 1
    assert first.watermark["MD"] >= 1
    assert row(first.forecast, "2026-10") is not None

    # More October time and a December entry arrive after the first version.
    await approve(w, entry(w, "2026-10-16", "4", "150.00"), entry(w, "2026-12-01", "8", "160.00"))
    await until_row(w, "2026-12", wip="1280.00")
    await until_row(w, "2026-10", wip="1800.00")
    await settled(w)
    second = (
        await w.fc.CreateForecastVersion(
            fa.CreateForecastVersionRequest(forecast_version=fa.ForecastVersion(name="after October"))
        )
    ).forecast_version
    assert (second.name, second.previous_version_id) == ("after October", first.id)
    assert second.watermark["TIME"] > first.watermark["TIME"]

    compared = await w.fc.CompareForecastVersions(
        fa.CompareForecastVersionsRequest(id=first.id, other_id=second.id)
    )
    changes = {r.month: (r.change, r.volume, r.rate, r.timing) for r in compared.rows}
    assert changes == {
        "2026-10": ("600.00", "600.00", "0.00", "0.00"),
        "2026-12": ("1280.00", "1280.00", "0.00", "0.00"),
    }

    # A version never changes, even by hand in the database.
    engine = create_engine(w.database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError, match="immutable"):
                await conn.execute(
                    sa.text("UPDATE forecasting.forecast_versions SET name = 'x' WHERE id = :id"),
                    {"id": first.id},
                )
    finally:
        await engine.dispose()
    again = (await w.fc.GetForecastVersion(fa.GetForecastVersionRequest(id=first.id))).forecast_version
    assert again.forecast == first.forecast

    listed = await w.fc.ListForecastVersions(fa.ListForecastVersionsRequest(page_size=1))
    assert [v.id for v in listed.forecast_versions] == [second.id]
    assert not listed.forecast_versions[0].HasField("forecast")
    rest = await w.fc.ListForecastVersions(fa.ListForecastVersionsRequest(page_token=listed.next_page_token))
    assert [v.id for v in rest.forecast_versions] == [first.id]

    published = {p.version_id: p for p in await published_versions(w)}
    assert set(published) >= {first.id, second.id}
    event = published[second.id]
    assert (event.name, event.previous_version_id, dict(event.watermark)) == (
        "after October",
        first.id,
        dict(second.watermark),
    )
    october = next(t for t in event.totals if t.month == "2026-10")
    assert (october.legal_entity_id, october.currency, october.forecast_revenue) == (
        w.f["le"].id,
        "GBP",
        "1800.00",
    )

    # Accuracy: the first version said 1,200 for October; 1,800 was invoiced and posted.
    await bill_and_post(w, "2026-10-01", "2026-10-31")
    await until_row(w, "2026-10", actual_revenue="1800.00")
    accuracy = await w.fc.GetForecastAccuracy(fa.GetForecastAccuracyRequest(id=first.id, month="2026-10"))
    (only,) = accuracy.rows
    assert (only.forecast_revenue, only.actual_revenue, only.variance) == ("1200.00", "1800.00", "600.00")
    assert (only.forecast_hours, only.actual_hours) == ("8.00", "12.00")
    assert accuracy.totals[0].absolute_percentage_error == "0.3333"


async def test_reversed_time_leaves_the_forecast_and_bad_requests_name_the_field(world: World) -> None:
    w = world
    e = entry(w, "2026-11-03", "6", "150.00")
    await approve(w, e)
    await until_row(w, "2026-11", wip="900.00")
    reversal = entry(w, "2026-11-03", "-6", "150.00")
    reversal.reverses_id = e.id
    e.status, e.reversed_by_id = tk.TIME_ENTRY_STATUS_REVERSED, reversal.id
    await publish(
        w, "time.entry.reversed", e.project_id, tev.TimeEntryReversed(original=e, reversal=reversal)
    )

    async def gone() -> bool:
        return row(await forecast(w, project_id=w.f["project"].id), "2026-11") is None

    await eventually(gone)

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await w.fc.GetForecast(fa.GetForecastRequest(month_from="2026-13"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "month_from" in (bad.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await w.fc.GetForecastVersion(fa.GetForecastVersionRequest(id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    version = (await w.fc.CreateForecastVersion(fa.CreateForecastVersionRequest())).forecast_version
    # The current month is Brisbane's (the only legal entity): not closed; the one before it is,
    # even at an instant when UTC is still in it.
    this_month = month_of(w.today)
    with pytest.raises(grpc.aio.AioRpcError) as open_month:
        await w.fc.GetForecastAccuracy(fa.GetForecastAccuracyRequest(id=version.id, month=this_month))
    assert open_month.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert this_month in (open_month.value.details() or "")
    last_month = month_of(w.today.replace(day=1) - dt.timedelta(days=1))
    closed = await w.fc.GetForecastAccuracy(fa.GetForecastAccuracyRequest(id=version.id, month=last_month))
    assert closed.month == last_month


async def test_utilization_is_billable_time_over_calendar_capacity(world: World) -> None:
    w = world
    dev = w.f["dev"].id

    month = w.week.month

    async def the_month() -> fa.UtilizationRow:
        reply = await w.fc.GetUtilization(
            fa.GetUtilizationRequest(consultant_id=dev, month_from=month, month_to=month)
        )
        return reply.rows[0] if reply.rows else fa.UtilizationRow()

    async def scheduled() -> bool:
        return (await the_month()).scheduled_hours == "32.00"

    await eventually(scheduled)
    row_ = await the_month()
    # The month's weekdays less the holiday (a Wednesday), x 40 h / 5; 32 h scheduled.
    year, number = w.week.monday.year, w.week.monday.month
    days = [dt.date(year, number, n) for n in range(1, calendar.monthrange(year, number)[1] + 1)]
    capacity = Decimal(8 * (sum(1 for d in days if d.weekday() < 5) - 1))
    assert (row_.capacity_hours, row_.billable_hours, row_.scheduled_billable_hours) == (
        f"{capacity}.00",
        "0.00",
        "32.00",
    )
    forecast_ratio = (Decimal(32) / capacity).quantize(Decimal("0.0001"))
    assert (row_.utilization_actual, row_.utilization_forecast) == ("0.0000", str(forecast_ratio))

    # Without a range: three months from the legal entity's current month (Brisbane's).
    default = await w.fc.GetUtilization(fa.GetUtilizationRequest(consultant_id=dev))
    months = [w.today.replace(day=1)]
    for _ in range(2):
        months.append((months[-1] + dt.timedelta(days=31)).replace(day=1))
    assert [r.month for r in default.rows] == [month_of(m) for m in months]
