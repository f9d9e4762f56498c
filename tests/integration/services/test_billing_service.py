"""Billing as a running service on real PostgreSQL and JetStream: the ledger, runs, the lifecycle.

Approved time, reversals and completed milestones arrive as the real protobuf events on the
real streams (TIME, MD) with the headers every producer sets; master data comes from the real
master-data service. Posting goes to the file ERP adapter in a temporary directory.
"""

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from nats.js import JetStreamContext

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.db import create_engine
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import masterdata_events_pb2 as mev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService
from accrue.timekeeping.v1 import resources_pb2 as tk

# Events carry the run's pinned instant, never the real date; the work has fixed dates and no
# test here judges one against "now", so they are not among `make test-dates`.
pytestmark = pytest.mark.integration

FINANCE = "finance-1"


class World:
    """The running services, a JetStream client and the seed firm."""

    def __init__(
        self,
        md_: Any,
        bl_: Any,
        js: JetStreamContext,
        firm: dict[str, Any],
        erp_dir: Path,
        db: str,
        now: dt.datetime,
    ) -> None:
        self.md, self.bl, self.js, self.f, self.erp_dir, self.database_url = md_, bl_, js, firm, erp_dir, db
        # When the events the test publishes happened: the run's pinned instant.
        self.now = now


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
    masterdata = await start_service("masterdata")
    billing = await start_service(
        "billing",
        masterdata_address=f"127.0.0.1:{masterdata.grpc_port}",
        erp_file_dir=tmp_path / "erp",
        posting_poll_seconds=0.05,
        erp_retry_first_seconds=0.05,
        erp_rate_per_second=100.0,
        schedule_interval_seconds=0,
    )
    md_stub = mdg.MasterDataServiceStub(channel_to(masterdata))
    nc = await nats.connect(nats_url)
    firm = await build_firm(md_stub)
    yield World(
        md_stub,
        blg.BillingServiceStub(channel_to(billing)),
        nc.jetstream(),
        firm,
        tmp_path / "erp",
        database_url,
        instant,
    )
    await nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer or job
            await asyncio.sleep(0.05)


async def publish(w: World, event_type: str, key: str, message: Message, event_id: str = "") -> str:
    """An event as every producer's outbox relay publishes it (docs/events.md)."""
    event_id = event_id or str(uuid.uuid4())
    await w.js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": event_id,
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": w.now.isoformat(),
        },
    )
    return event_id


def time_entry(
    w: World, day: str, hours: str, *, project: Any = None, consultant: Any = None, **extra: Any
) -> tk.TimeEntry:
    project = project or w.f["project"]
    entry = tk.TimeEntry(
        id=str(uuid.uuid4()),
        consultant_id=(consultant or w.f["dev"]).id,
        project_id=project.id,
        labor_category_id=w.f["lc"].id,
        work_date=day,
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        legal_entity_id=w.f["le"].id,
        customer_id=project.customer_id,
        **extra,
    )
    entry.approve_time.FromDatetime(w.now)
    return entry


async def approve(w: World, *entries: tk.TimeEntry) -> None:
    for e in entries:
        await publish(w, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))


async def ledger_has(w: World, count: int) -> None:
    async def check() -> bool:
        return await scalar(w, "SELECT count(*) FROM billing.wip_entries") == count

    await eventually(check)


async def scalar(w: World, sql: str, **params: Any) -> Any:
    engine = create_engine(w.database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params)
    finally:
        await engine.dispose()


async def run(w: World, start: str = "2026-11-01", end: str = "2026-11-30", **kw: Any) -> bl.BillingRun:
    request = bla.CreateBillingRunRequest(billing_run=bl.BillingRun(period_start=start, period_end=end, **kw))
    return (await w.bl.CreateBillingRun(request)).billing_run


async def get(w: World, invoice_id: str) -> bl.Invoice:
    return (await w.bl.GetInvoice(bla.GetInvoiceRequest(id=invoice_id))).invoice


async def approve_invoice(w: World, invoice_id: str) -> bl.Invoice:
    return (await w.bl.ApproveInvoice(bla.ApproveInvoiceRequest(id=invoice_id, actor_id=FINANCE))).invoice


async def post_and_wait(w: World, invoice_id: str) -> bl.Invoice:
    queued = (await w.bl.PostInvoice(bla.PostInvoiceRequest(id=invoice_id, actor_id=FINANCE))).invoice
    assert queued.status in (bl.INVOICE_STATUS_APPROVED, bl.INVOICE_STATUS_POSTED)

    async def posted() -> bool:
        return (await get(w, invoice_id)).status == bl.INVOICE_STATUS_POSTED

    await eventually(posted)
    return await get(w, invoice_id)


async def events(w: World, subject: str) -> list[Any]:
    """Every message on the BILLING stream under subject, decoded."""
    sub = await w.js.pull_subscribe(subject, stream="BILLING")
    found: list[Any] = []
    try:
        while True:
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in batch:
                found.append(msg)
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return found


async def on_stream(w: World, subject: str, count: int) -> list[Any]:
    """The messages under subject once there are count of them: the outbox relay publishes what
    a call committed on its own schedule, so a test waits for it rather than racing it."""
    found: list[Any] = []

    async def all_there() -> bool:
        found[:] = await events(w, subject)
        return len(found) >= count

    await eventually(all_there)
    assert len(found) == count, [m.subject for m in found]
    return found


async def contract(w: World, code: str, line: md.ContractLine, **kw: Any) -> md.Contract:
    return (
        await w.md.CreateContract(
            mda.CreateContractRequest(
                contract=md.Contract(code=code, customer_id=w.f["cu"].id, currency="GBP", lines=[line], **kw)
            )
        )
    ).contract


async def project(w: World, code: str) -> md.Project:
    return (
        await w.md.CreateProject(
            mda.CreateProjectRequest(
                project=md.Project(
                    code=code,
                    name=code,
                    customer_id=w.f["cu"].id,
                    legal_entity_id=w.f["le"].id,
                    manager_id=w.f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project


# -- the ledger and runs -----------------------------------------------------------------------


async def test_the_same_approval_twice_is_billed_once(world: World) -> None:
    w = world
    entry = time_entry(w, "2026-11-02", "8")
    event_id = await publish(
        w, "time.entry.approved", entry.project_id, tev.TimeEntryApproved(time_entry=entry)
    )
    # The same event again under another message id (a producer that published twice), and a
    # redelivery of the original.
    await approve(w, entry)
    await publish(
        w, "time.entry.approved", entry.project_id, tev.TimeEntryApproved(time_entry=entry), event_id
    )
    await ledger_has(w, 1)
    (invoice,) = (await run(w)).invoices
    assert [line.source_time_entry_ids for line in invoice.lines] == [[entry.id]]
    assert invoice.total == "1200.00"


async def test_late_work_joins_the_runs_draft_on_the_same_line(world: World) -> None:
    w = world
    first = time_entry(w, "2026-11-02", "0.25")
    await approve(w, first)
    await ledger_has(w, 1)
    (draft,) = (await run(w)).invoices
    late = time_entry(w, "2026-11-03", "0.25")
    await approve(w, late)
    await ledger_has(w, 2)
    again = await run(w)
    (invoice,) = again.invoices
    assert invoice.id == draft.id
    (line,) = invoice.lines
    assert (line.quantity, line.amount, sorted(line.source_time_entry_ids)) == (
        "0.50",
        "75.00",
        sorted([first.id, late.id]),
    )
    drafted = await on_stream(w, "billing.invoice.drafted.>", 2)
    assert drafted[-1].data == bev.InvoiceDrafted(invoice=invoice).SerializeToString()


async def test_a_bad_run_request_names_every_problem_and_writes_nothing(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await run(world, "2026-13-01", "2026-11-31", billing_period=9)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await scalar(world, "SELECT count(*) FROM billing.billing_runs") == 0


async def test_rounding_follows_the_contract_and_the_residual_shows(world: World) -> None:
    w = world
    card = (
        await w.md.CreateRateCard(
            mda.CreateRateCardRequest(
                rate_card=md.RateCard(
                    code="ODD",
                    currency="GBP",
                    rates=[
                        md.RateCardEntry(
                            labor_category_id=w.f["lc"].id, rate="100.10", effective_from="2026-01-01"
                        )
                    ],
                )
            )
        )
    ).rate_card
    p = await project(w, "P-ROUND")
    await contract(
        w,
        "K-ROUND",
        md.ContractLine(
            project_id=p.id, billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS, rate_card_id=card.id
        ),
        rounding_mode=md.ROUNDING_MODE_HALF_UP,
    )
    await approve(w, time_entry(w, "2026-11-02", "0.25", project=p))
    await ledger_has(w, 1)
    (invoice,) = (await run(w)).invoices
    (line,) = invoice.lines
    # 0.25 × 100.10 = 25.025: half-up as the contract says, not half-even.
    assert (line.amount, line.rounding_residual, invoice.rounding_residual) == ("25.03", "0.005", "0.005")
    assert invoice.rounding_mode == md.ROUNDING_MODE_HALF_UP


# -- the lifecycle -------------------------------------------------------------------------------


async def test_approved_invoices_post_once_with_gap_free_numbers(world: World) -> None:
    w = world
    p2 = await project(w, "P2")
    await contract(
        w,
        "K2",
        md.ContractLine(
            project_id=p2.id, billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS, rate_card_id=w.f["card"].id
        ),
    )
    await approve(w, time_entry(w, "2026-11-02", "8"), time_entry(w, "2026-11-03", "4", project=p2))
    await ledger_has(w, 2)
    first, second = sorted((await run(w)).invoices, key=lambda i: i.contract_id != w.f["contract"].id)
    with pytest.raises(grpc.aio.AioRpcError) as not_yet:
        await w.bl.PostInvoice(bla.PostInvoiceRequest(id=first.id, actor_id=FINANCE))
    assert not_yet.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    approved = await approve_invoice(w, first.id)
    assert (approved.status, approved.approved_by) == (bl.INVOICE_STATUS_APPROVED, FINANCE)
    posted = await post_and_wait(w, first.id)
    assert (posted.number, posted.erp_document_id) == ("000001", f"{w.f['le'].id}/{first.id}.json")
    assert posted.posting.status == bl.INVOICE_POSTING_STATUS_CONFIRMED
    document = json.loads((w.erp_dir / w.f["le"].id / f"{first.id}.json").read_text())
    assert (document["invoiceId"], document["total"]) == (first.id, posted.total)
    # Asking again changes nothing.
    again = (await w.bl.PostInvoice(bla.PostInvoiceRequest(id=first.id, actor_id=FINANCE))).invoice
    assert (again.status, again.number) == (bl.INVOICE_STATUS_POSTED, "000001")
    await approve_invoice(w, second.id)
    assert (await post_and_wait(w, second.id)).number == "000002"
    await on_stream(w, "billing.invoice.approved.>", 2)
    published = await on_stream(w, "billing.invoice.posted.>", 2)
    assert [bev.InvoicePosted.FromString(m.data).invoice.number for m in published] == ["000001", "000002"]
    assert {m.subject for m in published} == {f"billing.invoice.posted.{w.f['le'].id}"}


async def test_a_posted_invoice_never_changes(world: World) -> None:
    w = world
    await approve(w, time_entry(w, "2026-11-02", "8"))
    await ledger_has(w, 1)
    (invoice,) = (await run(w)).invoices
    await approve_invoice(w, invoice.id)
    await post_and_wait(w, invoice.id)
    with pytest.raises(grpc.aio.AioRpcError) as void:
        await w.bl.VoidInvoice(bla.VoidInvoiceRequest(id=invoice.id, actor_id=FINANCE, reason="oops"))
    assert void.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Not even by hand: the database refuses edits of a posted invoice, its lines and its work.
    for sql in (
        "UPDATE billing.invoices SET total = 0 WHERE id = :id",
        "UPDATE billing.invoice_lines SET amount = 0 WHERE invoice_id = :id",
        "UPDATE billing.wip_entries SET invoice_id = NULL WHERE invoice_id = :id",
    ):
        with pytest.raises(sa.exc.IntegrityError, match="POSTED"):
            await scalar(w, sql, id=invoice.id)
    assert (await get(w, invoice.id)).total == "1200.00"


async def test_voiding_a_draft_makes_its_work_billable_again(world: World) -> None:
    w = world
    entry = time_entry(w, "2026-11-02", "8")
    await approve(w, entry)
    await ledger_has(w, 1)
    (invoice,) = (await run(w)).invoices
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await w.bl.VoidInvoice(bla.VoidInvoiceRequest(id=invoice.id, actor_id=FINANCE))
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    voided = (
        await w.bl.VoidInvoice(bla.VoidInvoiceRequest(id=invoice.id, actor_id=FINANCE, reason="wrong PO"))
    ).invoice
    assert (voided.status, voided.void_reason, voided.voided_by) == (
        bl.INVOICE_STATUS_VOID,
        "wrong PO",
        FINANCE,
    )
    (msg,) = await on_stream(w, "billing.invoice.voided.>", 1)
    assert bev.InvoiceVoided.FromString(msg.data).reason == "wrong PO"
    rerun = await run(w)
    fresh = [i for i in rerun.invoices if i.status == bl.INVOICE_STATUS_DRAFT]
    assert [line.source_time_entry_ids for i in fresh for line in i.lines] == [[entry.id]]


# -- reversals and credits -------------------------------------------------------------------------


def reversal_of(original: tk.TimeEntry) -> tev.TimeEntryReversed:
    negative = tk.TimeEntry()
    negative.CopyFrom(original)
    negative.id = str(uuid.uuid4())
    negative.hours = f"-{original.hours}"
    negative.reverses_id = original.id
    reversed_original = tk.TimeEntry()
    reversed_original.CopyFrom(original)
    reversed_original.status = tk.TIME_ENTRY_STATUS_REVERSED
    reversed_original.reversed_by_id = negative.id
    return tev.TimeEntryReversed(original=reversed_original, reversal=negative)


async def test_reversed_invoiced_time_becomes_a_credit_line_in_the_next_run(world: World) -> None:
    w = world
    kept, wrong = time_entry(w, "2026-11-02", "8"), time_entry(w, "2026-11-03", "2.5")
    await approve(w, kept, wrong)
    await ledger_has(w, 2)
    (november,) = (await run(w)).invoices
    await approve_invoice(w, november.id)
    posted = await post_and_wait(w, november.id)
    event = reversal_of(wrong)
    await publish(w, "time.entry.reversed", wrong.project_id, event)
    await publish(w, "time.entry.reversed", wrong.project_id, event)  # applied once
    await ledger_has(w, 3)
    # The reversal is dated in November (its original's day): a December run does not take it.
    assert (await run(w, "2026-12-01", "2026-12-31")).invoices == []
    (november_again, credit_note) = sorted((await run(w)).invoices, key=lambda i: i.id != november.id)
    assert november_again.total == posted.total  # the posted invoice is untouched
    (line,) = credit_note.lines
    assert (line.kind, line.quantity, line.unit_price, line.amount) == (
        bl.INVOICE_LINE_KIND_CREDIT,
        "-2.50",
        "150.00",
        "-375.00",
    )
    assert (line.credited_invoice_id, list(line.source_time_entry_ids)) == (november.id, [event.reversal.id])
    assert line.credited_line_id == posted.lines[0].id
    assert credit_note.total == "-375.00"


async def test_reversed_time_never_invoiced_just_leaves_unbilled_work(world: World) -> None:
    w = world
    entry = time_entry(w, "2026-11-02", "8")
    await approve(w, entry)
    await ledger_has(w, 1)
    await publish(w, "time.entry.reversed", entry.project_id, reversal_of(entry))
    await ledger_has(w, 2)
    assert (await run(w)).invoices == []
    period = {"period_start": "2026-11-01", "period_end": "2026-11-30"}
    (summary,) = (await w.bl.SummarizeBilledWork(bla.SummarizeBilledWorkRequest(**period))).projects
    assert (summary.entry_count, summary.hours, summary.unbilled_hours, summary.billed_hours) == (
        2,
        "0.00",
        "0.00",
        "0.00",
    )
    assert all(e.cancelled for e in summary.entries)


# -- milestones ------------------------------------------------------------------------------------


async def test_a_completed_milestone_becomes_one_line_once(world: World) -> None:
    w = world
    p = await project(w, "P-FIXED")
    k = await contract(
        w,
        "K-FIXED",
        md.ContractLine(
            project_id=p.id,
            billing_model=md.BILLING_MODEL_FIXED_FEE,
            fee_amount="10000.00",
            tax_code="VAT-STD",
        ),
    )
    await w.md.CreateTaxRate(
        mda.CreateTaxRateRequest(
            tax_rate=md.TaxRate(tax_code="VAT-STD", rate="0.20", effective_from="2020-01-01")
        )
    )
    milestone = md.Milestone(
        id=str(uuid.uuid4()),
        contract_line_id=k.lines[0].id,
        name="Design sign-off",
        amount="2500.00",
        due_date="2026-11-15",
        status=md.MILESTONE_STATUS_COMPLETED,
    )
    milestone.complete_time.FromDatetime(dt.datetime(2026, 11, 14, 12, tzinfo=dt.UTC))
    completed = mev.MilestoneCompleted(milestone=milestone, contract_id=k.id, project_id=p.id)
    await publish(w, "md.milestone.completed", milestone.id, completed)
    await publish(w, "md.milestone.completed", milestone.id, completed)

    async def recorded() -> bool:
        return await scalar(w, "SELECT count(*) FROM billing.milestones") == 1

    await eventually(recorded)
    (invoice,) = (await run(w)).invoices
    (line,) = invoice.lines
    assert (line.kind, line.milestone_id, line.quantity, line.amount, line.tax_amount) == (
        bl.INVOICE_LINE_KIND_MILESTONE,
        milestone.id,
        "1.00",
        "2500.00",
        "500.00",
    )
    assert line.description == "Milestone: Design sign-off"
    assert (await run(w)).invoices[0].lines == invoice.lines


async def test_time_on_a_fixed_fee_line_is_settled_once_as_covered_by_the_fee(world: World) -> None:
    w = world
    p = await project(w, "P-FEE")
    k = await contract(
        w,
        "K-FEE",
        md.ContractLine(project_id=p.id, billing_model=md.BILLING_MODEL_FIXED_FEE, fee_amount="5000.00"),
    )
    entries = [time_entry(w, "2026-11-02", "8", project=p), time_entry(w, "2026-11-03", "4", project=p)]
    await approve(w, *entries)
    milestone = md.Milestone(
        id=str(uuid.uuid4()),
        contract_line_id=k.lines[0].id,
        name="Go-live",
        amount="5000.00",
        due_date="2026-11-20",
        status=md.MILESTONE_STATUS_COMPLETED,
    )
    milestone.complete_time.FromDatetime(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC))
    await publish(
        w,
        "md.milestone.completed",
        milestone.id,
        mev.MilestoneCompleted(milestone=milestone, contract_id=k.id, project_id=p.id),
    )
    await ledger_has(w, 2)

    async def recorded() -> bool:
        return await scalar(w, "SELECT count(*) FROM billing.milestones") == 1

    await eventually(recorded)
    (invoice,) = (await run(w)).invoices
    assert [(line.kind, line.amount) for line in invoice.lines] == [
        (bl.INVOICE_LINE_KIND_MILESTONE, "5000.00")
    ]
    # The time is settled in the ledger: held as covered by the fee, on no invoice, not unbilled.
    held = await scalar(
        w,
        "SELECT count(*) FROM billing.wip_entries"
        " WHERE hold = 'FIXED_FEE' AND hold_ref = :line AND invoice_id IS NULL",
        line=k.lines[0].id,
    )
    assert held == 2
    assert await scalar(w, "SELECT count(*) FROM billing.wip_entries WHERE hold IS NULL") == 0
    period = {"period_start": "2026-11-01", "period_end": "2026-11-30"}
    (summary,) = (await w.bl.SummarizeBilledWork(bla.SummarizeBilledWorkRequest(**period))).projects
    assert (summary.unbilled_hours, summary.billed_hours, summary.fixed_fee_hours) == (
        "0.00",
        "0.00",
        "12.00",
    )
    assert all(e.fixed_fee and not e.invoice_id for e in summary.entries)
    # Later runs (this period, a later one, and after the project gets a T&M line) bill none of
    # it, and the milestone stays billed once.
    assert (await run(w)).invoices[0].lines == invoice.lines
    changed = md.Contract()
    changed.CopyFrom(k)
    changed.lines[0].billing_model = md.BILLING_MODEL_TIME_AND_MATERIALS
    changed.lines[0].rate_card_id = w.f["card"].id
    changed.lines[0].fee_amount = ""
    await w.md.UpdateContract(
        mda.UpdateContractRequest(id=k.id, contract=changed, update_mask=FieldMask(paths=["lines"]))
    )

    async def time_and_materials() -> bool:
        payload = await scalar(
            w,
            "SELECT payload FROM billing.md_projection WHERE kind = 'contract_line' AND id = :id",
            id=k.lines[0].id,
        )
        return (
            payload is not None
            and md.ContractLine.FromString(payload).billing_model == md.BILLING_MODEL_TIME_AND_MATERIALS
        )

    await eventually(time_and_materials)
    december = await run(w, "2026-11-01", "2026-12-31")
    assert [line for i in december.invoices for line in i.lines if line.source_time_entry_ids] == []
    assert await scalar(w, "SELECT count(*) FROM billing.invoice_lines WHERE kind = 'MILESTONE'") == 1
    assert await scalar(w, "SELECT count(*) FROM billing.wip_entries WHERE hold = 'FIXED_FEE'") == 2


# -- caps and the exception queue --------------------------------------------------------------------


async def test_a_cap_bills_up_to_what_remains_and_finance_decides_the_rest(world: World) -> None:
    w = world
    p = await project(w, "P-CAP")
    k = await contract(
        w,
        "K-CAP",
        md.ContractLine(
            project_id=p.id,
            billing_model=md.BILLING_MODEL_CAPPED,
            rate_card_id=w.f["card"].id,
            cap_amount="2000.00",
        ),
    )
    line_id = k.lines[0].id
    # 150/h: 8 h = 1200 (60 %), then 4 h = 600 (90 %), then 4 h = 600 would cross the cap.
    first, second, over = (
        time_entry(w, f"2026-11-0{d}", h, project=p) for d, h in ((2, "8"), (3, "4"), (4, "4"))
    )
    await approve(w, first)
    await ledger_has(w, 1)
    await run(w)
    await approve(w, second, over)
    await ledger_has(w, 3)
    result = await run(w)
    (invoice,) = result.invoices
    assert invoice.subtotal == "1800.00"
    (exception,) = result.exceptions
    assert (exception.kind, exception.amount, exception.hours, list(exception.time_entry_ids)) == (
        bl.BILLING_EXCEPTION_KIND_CAP_EXCEEDED,
        "600.00",
        "4.00",
        [over.id],
    )
    status = (await w.bl.GetCapStatus(bla.GetCapStatusRequest(contract_line_id=line_id))).cap_status
    assert (status.cap_amount, status.billed_amount, status.remaining_amount, status.used_percent) == (
        "2000.00",
        "1800.00",
        "200.00",
        "90.00",
    )
    assert (list(status.thresholds_reached), status.excess_amount) == ([80, 90], "600.00")
    reached = [
        bev.CapThresholdReached.FromString(m.data)
        for m in await on_stream(w, "billing.cap.threshold_reached.>", 2)
    ]
    assert [(e.threshold_percent, e.billed_amount) for e in reached] == [(80, "1800.00"), (90, "1800.00")]
    # Finance bills the overage: the next run bills it beyond the cap.
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await w.bl.ResolveBillingException(
            bla.ResolveBillingExceptionRequest(
                id=exception.id, actor_id=FINANCE, resolution=bl.BILLING_EXCEPTION_RESOLUTION_RETRY + 9
            )
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    resolved = (
        await w.bl.ResolveBillingException(
            bla.ResolveBillingExceptionRequest(
                id=exception.id,
                actor_id=FINANCE,
                resolution=bl.BILLING_EXCEPTION_RESOLUTION_BILL_OVERAGE,
                note="agreed",
            )
        )
    ).billing_exception
    assert (resolved.status, resolved.resolved_by) == (bl.BILLING_EXCEPTION_STATUS_RESOLVED, FINANCE)
    assert (await run(w)).invoices[0].subtotal == "2400.00"
    status = (await w.bl.GetCapStatus(bla.GetCapStatusRequest(contract_line_id=line_id))).cap_status
    assert (status.remaining_amount, list(status.thresholds_reached)) == ("0.00", [80, 90, 100])


async def test_written_off_work_is_never_billed(world: World) -> None:
    w = world
    eur = (
        await w.md.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(
                    code="EURCO", name="Euro Co", legal_entity_id=w.f["le"].id, currency="EUR"
                )
            )
        )
    ).customer
    p = await project(w, "P-EUR")
    await w.md.CreateContract(
        mda.CreateContractRequest(
            contract=md.Contract(
                code="K-EUR",
                customer_id=eur.id,
                currency="EUR",
                lines=[
                    md.ContractLine(
                        project_id=p.id,
                        billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                        rate_card_id=w.f["card"].id,
                    )
                ],
            )
        )
    )
    await approve(w, time_entry(w, "2026-11-02", "3", project=p))
    await ledger_has(w, 1)
    result = await run(w)
    assert result.invoices == []
    (missing_fx,) = result.exceptions
    assert missing_fx.kind == bl.BILLING_EXCEPTION_KIND_MISSING_FX
    listed = await w.bl.ListBillingExceptions(
        bla.ListBillingExceptionsRequest(
            status=bl.BILLING_EXCEPTION_STATUS_OPEN, kind=bl.BILLING_EXCEPTION_KIND_MISSING_FX
        )
    )
    assert [e.id for e in listed.billing_exceptions] == [missing_fx.id]
    await w.bl.ResolveBillingException(
        bla.ResolveBillingExceptionRequest(
            id=missing_fx.id, actor_id=FINANCE, resolution=bl.BILLING_EXCEPTION_RESOLUTION_WRITE_OFF
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await w.bl.ResolveBillingException(
            bla.ResolveBillingExceptionRequest(
                id=missing_fx.id, actor_id=FINANCE, resolution=bl.BILLING_EXCEPTION_RESOLUTION_WRITE_OFF
            )
        )
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await w.md.CreateFxRate(
        mda.CreateFxRateRequest(
            fx_rate=md.FxRate(base="GBP", quote="EUR", rate="1.15", effective_date="2026-11-01")
        )
    )
    again = await run(w)
    assert (again.invoices, again.exceptions) == ([], [])
    period = {"period_start": "2026-11-01", "period_end": "2026-11-30"}
    (summary,) = (await w.bl.SummarizeBilledWork(bla.SummarizeBilledWorkRequest(**period))).projects
    assert (summary.unbilled_hours, summary.written_off_hours) == ("0.00", "3.00")


async def test_an_erp_failure_becomes_an_exception_and_a_retry_posts(world: World, tmp_path: Path) -> None:
    w = world
    await approve(w, time_entry(w, "2026-11-02", "8"))
    await ledger_has(w, 1)
    (invoice,) = (await run(w)).invoices
    await approve_invoice(w, invoice.id)
    # The export directory cannot be made (a file is in the way): every attempt fails.
    w.erp_dir.write_text("not a directory")
    await w.bl.PostInvoice(bla.PostInvoiceRequest(id=invoice.id, actor_id=FINANCE))

    async def failed() -> bool:
        return (await get(w, invoice.id)).posting.status == bl.INVOICE_POSTING_STATUS_FAILED

    await eventually(failed, within=30)
    stuck = await get(w, invoice.id)
    assert (stuck.status, stuck.number, stuck.posting.attempts) == (bl.INVOICE_STATUS_APPROVED, "", 8)
    assert "could not write" in stuck.posting.last_error
    (exception,) = (
        await w.bl.ListBillingExceptions(
            bla.ListBillingExceptionsRequest(kind=bl.BILLING_EXCEPTION_KIND_ERP_POST_FAILED)
        )
    ).billing_exceptions
    assert (exception.invoice_id, exception.amount, exception.status) == (
        invoice.id,
        "1200.00",
        bl.BILLING_EXCEPTION_STATUS_OPEN,
    )
    assert await events(w, "billing.invoice.posted.>") == []
    w.erp_dir.unlink()
    await w.bl.ResolveBillingException(
        bla.ResolveBillingExceptionRequest(
            id=exception.id, actor_id=FINANCE, resolution=bl.BILLING_EXCEPTION_RESOLUTION_RETRY
        )
    )

    async def posted() -> bool:
        return (await get(w, invoice.id)).status == bl.INVOICE_STATUS_POSTED

    await eventually(posted)
    assert (await get(w, invoice.id)).number == "000001"
    await on_stream(w, "billing.invoice.posted.>", 1)


async def test_a_cap_status_needs_a_capped_line(world: World) -> None:
    w = world
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await w.bl.GetCapStatus(bla.GetCapStatusRequest(contract_line_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # The T&M line is projected once billing has seen the contract.
    await approve(w, time_entry(w, "2026-11-02", "1"))
    await ledger_has(w, 1)
    await run(w)
    with pytest.raises(grpc.aio.AioRpcError) as not_capped:
        await w.bl.GetCapStatus(bla.GetCapStatusRequest(contract_line_id=w.f["contract"].lines[0].id))
    assert not_capped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
