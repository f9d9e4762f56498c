"""Billing's access rules on the running service, with explicit principals and real tokens.

Two legal entities: UK (the seed firm's, a T&M contract) and IE (a CAPPED contract whose cap
turns part of the work into a CAP_EXCEEDED exception). Four eyes are on for IE only
(ACCRUE_BILLING_FOUR_EYES_LEGAL_ENTITIES). Each test acts as finance of one legal entity, of
both, or as another role, and checks both the answer and the database.
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.js import JetStreamContext

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.db import create_engine
from accrue.events.v1 import time_events_pb2 as tev
from accrue.identity.internal import InternalSigner
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.runtime.audit import collecting
from accrue.runtime.clock import FixedClock
from accrue.runtime.errors import PermissionDenied
from accrue.runtime.identity import Principal
from accrue.runtime.server import RunningService
from accrue.services.billing.adapters import tables
from accrue.services.billing.adapters.erp.file import FileErp
from accrue.services.billing.adapters.repository import ExceptionDraft
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.access import FourEyes
from accrue.services.billing.service_layer.handlers import Billing
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = pytest.mark.integration

GROUP_FINANCE = identity.person("fin-group", "finance")


class World:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.channels: list[grpc.aio.Channel] = []

    def billing_as(self, principal: Principal) -> blg.BillingServiceStub:
        channel = identity.channel(self.address, self.signer, principal)
        self.channels.append(channel)
        return blg.BillingServiceStub(channel)

    def finance_of(self, *legal_entities: str, subject: str = "") -> Principal:
        return identity.person(
            subject or f"fin-{'-'.join(legal_entities)}", "finance", legal_entities=legal_entities
        )

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params)


async def _irish_firm(stub: mdg.MasterDataServiceStub, f: dict[str, Any]) -> dict[str, Any]:
    """An Irish legal entity with a customer, a project and a CAPPED contract (cap 1,000.00)."""
    ie = (
        await stub.CreateLegalEntity(
            mda.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="IE", name="Acme Ireland", base_currency="GBP")
            )
        )
    ).legal_entity
    cu = (
        await stub.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(code="INITECH", name="Initech", legal_entity_id=ie.id, currency="GBP")
            )
        )
    ).customer
    project = (
        await stub.CreateProject(
            mda.CreateProjectRequest(
                project=md.Project(
                    code="P-IE",
                    name="Dublin",
                    customer_id=cu.id,
                    legal_entity_id=ie.id,
                    manager_id=f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    contract = (
        await stub.CreateContract(
            mda.CreateContractRequest(
                contract=md.Contract(
                    code="K-IE",
                    customer_id=cu.id,
                    currency="GBP",
                    lines=[
                        md.ContractLine(
                            project_id=project.id,
                            billing_model=md.BILLING_MODEL_CAPPED,
                            rate_card_id=f["card"].id,
                            cap_amount="1000.00",
                        )
                    ],
                )
            )
        )
    ).contract
    return {"ie": ie, "ie_project": project, "ie_line": contract.lines[0].id}


@pytest.fixture
async def world(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    build_firm: Any,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
    instant: dt.datetime,
    internal_signer: InternalSigner,
) -> AsyncIterator[World]:
    masterdata = await start_service("masterdata")
    md_stub = mdg.MasterDataServiceStub(channel_to(masterdata))
    firm = await build_firm(md_stub)
    firm.update(await _irish_firm(md_stub, firm))
    # Billing starts once the legal entities exist: four eyes are set by their ids.
    billing = await start_service(
        "billing",
        masterdata_address=f"127.0.0.1:{masterdata.grpc_port}",
        erp_file_dir=tmp_path / "erp",
        posting_poll_seconds=3600,
        schedule_interval_seconds=0,
        four_eyes_legal_entities=[firm["ie"].id],
    )
    nc = await nats.connect(nats_url)
    engine = create_engine(database_url)
    w = World(
        f=firm,
        uk=firm["le"].id,
        ie=firm["ie"].id,
        js=nc.jetstream(),
        engine=engine,
        address=f"127.0.0.1:{billing.grpc_port}",
        signer=internal_signer,
        now=instant,
        md=md_stub,
        erp_dir=tmp_path / "erp",
    )
    yield w
    for channel in w.channels:
        await channel.close()
    await nc.close()
    await engine.dispose()


async def publish(
    js: JetStreamContext, event_type: str, key: str, message: Message, now: dt.datetime
) -> None:
    await js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": str(uuid.uuid4()),
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": now.isoformat(),
        },
    )


async def approved_work(w: World) -> None:
    """8 h in UK (T&M), and 4 h + 4 h in IE (150/h against a 1,000.00 cap: the second 4 h is over)."""
    entries = [
        (w.f["project"], w.uk, "2026-11-02", "8"),
        (w.f["ie_project"], w.ie, "2026-11-02", "4"),
        (w.f["ie_project"], w.ie, "2026-11-03", "4"),
    ]
    for project, legal_entity_id, day, hours in entries:
        entry = tk.TimeEntry(
            id=str(uuid.uuid4()),
            consultant_id=w.f["dev"].id,
            project_id=project.id,
            labor_category_id=w.f["lc"].id,
            work_date=day,
            hours=hours,
            billable=True,
            status=tk.TIME_ENTRY_STATUS_APPROVED,
            legal_entity_id=legal_entity_id,
            customer_id=project.customer_id,
        )
        entry.approve_time.FromDatetime(w.now)
        await publish(w.js, "time.entry.approved", project.id, tev.TimeEntryApproved(time_entry=entry), w.now)

    async def all_there() -> bool:
        return await w.scalar("SELECT count(*) FROM billing.wip_entries") == len(entries)

    await eventually(all_there)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def billed(w: World) -> tuple[bl.Invoice, bl.Invoice, bl.BillingException]:
    """The work billed by a run of every legal entity: the UK and IE drafts and IE's exception."""
    await approved_work(w)
    request = bla.CreateBillingRunRequest(
        billing_run=bl.BillingRun(period_start="2026-11-01", period_end="2026-11-30")
    )
    result = (await w.billing_as(GROUP_FINANCE).CreateBillingRun(request)).billing_run
    by_entity = {i.legal_entity_id: i for i in result.invoices}
    (exception,) = result.exceptions
    assert exception.legal_entity_id == w.ie
    return by_entity[w.uk], by_entity[w.ie], exception


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- legal-entity scope ------------------------------------------------------------------------


async def test_legal_entity_scope_lists_show_only_the_callers_entities(world: World) -> None:
    w = world
    uk_invoice, ie_invoice, exception = await billed(w)
    irish = w.billing_as(w.finance_of(w.ie))
    # A page of one: filtered in SQL, so the one visible invoice fills it and nothing follows.
    page = await irish.ListInvoices(bla.ListInvoicesRequest(page_size=1))
    assert ([i.id for i in page.invoices], page.next_page_token) == ([ie_invoice.id], "")
    # Naming the other entity in the filter shows nothing of it.
    assert not (await irish.ListInvoices(bla.ListInvoicesRequest(legal_entity_id=w.uk))).invoices
    everything = await w.billing_as(GROUP_FINANCE).ListInvoices(bla.ListInvoicesRequest(page_size=1))
    assert everything.next_page_token  # two invoices: a second page
    british = w.billing_as(w.finance_of(w.uk))
    assert [i.id for i in (await british.ListInvoices(bla.ListInvoicesRequest())).invoices] == [uk_invoice.id]
    exceptions = await irish.ListBillingExceptions(bla.ListBillingExceptionsRequest(page_size=1))
    assert [x.id for x in exceptions.billing_exceptions] == [exception.id]
    assert not (await british.ListBillingExceptions(bla.ListBillingExceptionsRequest())).billing_exceptions
    # Reconciliation's read: a viewer of IE sees IE's project only.
    viewer = w.billing_as(identity.person("viewer-ie", "viewer", legal_entities=[w.ie]))
    summary = await viewer.SummarizeBilledWork(
        bla.SummarizeBilledWorkRequest(period_start="2026-11-01", period_end="2026-11-30")
    )
    assert [(p.project_id, p.legal_entity_id) for p in summary.projects] == [(w.f["ie_project"].id, w.ie)]
    # A scoped principal with no legal entities at all sees nothing (scope fails closed).
    nobody = w.billing_as(identity.person("fin-none", "finance", legal_entities=[]))
    assert not (await nobody.ListInvoices(bla.ListInvoicesRequest())).invoices


async def test_legal_entity_scope_another_entitys_records_are_not_found_like_missing_ones(
    world: World,
) -> None:
    w = world
    uk_invoice, ie_invoice, exception = await billed(w)
    british = w.billing_as(w.finance_of(w.uk))
    missing = str(uuid.uuid4())
    gone = await refused(british.GetInvoice(bla.GetInvoiceRequest(id=missing)))
    hidden = await refused(british.GetInvoice(bla.GetInvoiceRequest(id=ie_invoice.id)))
    assert (hidden.code(), gone.code()) == (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND)
    # The same words, but for the id: nothing tells an existing invoice from a missing one.
    assert hidden.details().replace(ie_invoice.id, missing) == gone.details()
    hidden_exception = await refused(
        british.GetBillingException(bla.GetBillingExceptionRequest(id=exception.id))
    )
    assert hidden_exception.code() == grpc.StatusCode.NOT_FOUND
    hidden_cap = await refused(british.GetCapStatus(bla.GetCapStatusRequest(contract_line_id=w.f["ie_line"])))
    assert hidden_cap.code() == grpc.StatusCode.NOT_FOUND
    irish = w.billing_as(w.finance_of(w.ie))
    status = (await irish.GetCapStatus(bla.GetCapStatusRequest(contract_line_id=w.f["ie_line"]))).cap_status
    assert (status.cap_amount, status.billed_amount) == ("1000.00", "600.00")
    assert (await irish.GetInvoice(bla.GetInvoiceRequest(id=ie_invoice.id))).invoice.id == ie_invoice.id
    # A run of every legal entity shows a scoped caller its own entity's part only.
    (run_id,) = [str(r) for r in [await w.scalar("SELECT id FROM billing.billing_runs")]]
    run = (await irish.GetBillingRun(bla.GetBillingRunRequest(id=run_id))).billing_run
    assert ([i.id for i in run.invoices], [x.id for x in run.exceptions]) == ([ie_invoice.id], [exception.id])
    run = (await british.GetBillingRun(bla.GetBillingRunRequest(id=run_id))).billing_run
    assert ([i.id for i in run.invoices], list(run.exceptions)) == ([uk_invoice.id], [])


async def test_legal_entity_scope_writes_to_another_entitys_records_are_not_found_and_change_nothing(
    world: World,
) -> None:
    w = world
    _, ie_invoice, exception = await billed(w)
    british = w.billing_as(w.finance_of(w.uk))
    attempts = [
        british.ApproveInvoice(bla.ApproveInvoiceRequest(id=ie_invoice.id)),
        british.VoidInvoice(bla.VoidInvoiceRequest(id=ie_invoice.id, reason="not mine")),
        british.PostInvoice(bla.PostInvoiceRequest(id=ie_invoice.id)),
        british.ResolveBillingException(
            bla.ResolveBillingExceptionRequest(
                id=exception.id, resolution=bl.BILLING_EXCEPTION_RESOLUTION_WRITE_OFF
            )
        ),
    ]
    for attempt in attempts:
        assert (await refused(attempt)).code() == grpc.StatusCode.NOT_FOUND
    assert (
        await w.scalar(
            "SELECT status || '|' || approved_by || '|' || voided_by FROM billing.invoices WHERE id = :id",
            id=ie_invoice.id,
        )
        == "DRAFT||"
    )
    assert await w.scalar("SELECT count(*) FROM billing.posting_jobs") == 0
    assert (
        await w.scalar("SELECT status FROM billing.billing_exceptions WHERE id = :id", id=exception.id)
        == "OPEN"
    )
    assert await w.scalar("SELECT count(*) FROM billing.wip_entries WHERE hold IS NOT NULL") == 0


async def test_legal_entity_scope_a_scoped_caller_runs_billing_only_for_its_own_entity(world: World) -> None:
    w = world
    await approved_work(w)
    irish = w.billing_as(w.finance_of(w.ie))

    def run_request(legal_entity_id: str = "") -> bla.CreateBillingRunRequest:
        return bla.CreateBillingRunRequest(
            billing_run=bl.BillingRun(
                period_start="2026-11-01", period_end="2026-11-30", legal_entity_id=legal_entity_id
            )
        )

    for wanted in ("", w.uk):
        denied = await refused(irish.CreateBillingRun(run_request(wanted)))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "legal-entity-scope" in denied.details()
    assert await w.scalar("SELECT count(*) FROM billing.billing_runs") == 0
    run = (await irish.CreateBillingRun(run_request(w.ie))).billing_run
    assert {i.legal_entity_id for i in run.invoices} == {w.ie}
    # The UK work is still unbilled.
    assert (
        await w.scalar(
            "SELECT count(*) FROM billing.wip_entries WHERE legal_entity_id = :le AND invoice_id IS NULL",
            le=w.uk,
        )
        == 1
    )


# -- roles ---------------------------------------------------------------------------------------


async def test_roles_finance_changes_invoices_others_only_read_or_are_refused(world: World) -> None:
    w = world
    uk_invoice, _, _ = await billed(w)
    manager = w.billing_as(identity.person("pm-1", "project_manager"))
    assert (await manager.GetInvoice(bla.GetInvoiceRequest(id=uk_invoice.id))).invoice.status == (
        bl.INVOICE_STATUS_DRAFT
    )
    for principal in (
        identity.person("pm-1", "project_manager"),
        identity.person("auditor-1", "auditor"),
        identity.person("viewer-1", "viewer"),
    ):
        denied = await refused(
            w.billing_as(principal).ApproveInvoice(bla.ApproveInvoiceRequest(id=uk_invoice.id))
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    viewer_read = await refused(
        w.billing_as(identity.person("viewer-1", "viewer")).GetInvoice(
            bla.GetInvoiceRequest(id=uk_invoice.id)
        )
    )
    assert viewer_read.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await w.scalar("SELECT status FROM billing.invoices WHERE id = :id", id=uk_invoice.id) == "DRAFT"


async def test_the_actor_is_the_principal_and_a_body_naming_someone_else_is_refused(world: World) -> None:
    w = world
    uk_invoice, _, _ = await billed(w)
    finance = w.billing_as(w.finance_of(w.uk, subject="fin-anna"))
    mismatch = await refused(
        finance.ApproveInvoice(bla.ApproveInvoiceRequest(id=uk_invoice.id, actor_id="fin-bob"))
    )
    assert mismatch.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "actor_id" in mismatch.details()
    approved = (await finance.ApproveInvoice(bla.ApproveInvoiceRequest(id=uk_invoice.id))).invoice
    assert approved.approved_by == "fin-anna"
    assert (
        await w.scalar("SELECT approved_by FROM billing.invoices WHERE id = :id", id=uk_invoice.id)
        == "fin-anna"
    )


# -- four eyes -----------------------------------------------------------------------------------


async def test_four_eyes_the_approver_cannot_post_where_it_is_on(world: World) -> None:
    w = world
    uk_invoice, ie_invoice, _ = await billed(w)
    anna = w.billing_as(w.finance_of(w.uk, w.ie, subject="fin-anna"))
    bob = w.billing_as(w.finance_of(w.ie, subject="fin-bob"))
    await anna.ApproveInvoice(bla.ApproveInvoiceRequest(id=ie_invoice.id))
    denied = await refused(anna.PostInvoice(bla.PostInvoiceRequest(id=ie_invoice.id)))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "four-eyes" in denied.details()
    assert await w.scalar("SELECT count(*) FROM billing.posting_jobs") == 0
    queued = (await bob.PostInvoice(bla.PostInvoiceRequest(id=ie_invoice.id))).invoice
    assert queued.status == bl.INVOICE_STATUS_APPROVED
    assert (
        await w.scalar(
            "SELECT requested_by FROM billing.posting_jobs WHERE invoice_id = :id", id=ie_invoice.id
        )
        == "fin-bob"
    )
    # Four eyes are off in the UK: there the approver may post.
    await anna.ApproveInvoice(bla.ApproveInvoiceRequest(id=uk_invoice.id))
    await anna.PostInvoice(bla.PostInvoiceRequest(id=uk_invoice.id))
    assert (
        await w.scalar(
            "SELECT requested_by FROM billing.posting_jobs WHERE invoice_id = :id", id=uk_invoice.id
        )
        == "fin-anna"
    )


# -- the use cases on their own: audit notes, and a retried posting is posting ------------------


def use_cases(w: World) -> Billing:
    """The billing use cases on the test's database, as the service wires them (four eyes in IE)."""
    reader = MasterDataReader(w.md, tables.md_projection)
    return Billing(
        lambda: BillingUnitOfWork(w.engine, reader),
        FixedClock(w.now + dt.timedelta(minutes=5)),
        erp=FileErp(w.erp_dir),
        four_eyes=FourEyes.of([w.ie]),
    )


async def test_every_change_is_noted_for_the_audit_trail(world: World) -> None:
    w = world
    await approved_work(w)
    app = use_cases(w)
    irish = w.finance_of(w.ie, subject="fin-ie")
    now = w.now + dt.timedelta(minutes=5)
    with collecting() as changes:
        result = await app.run("2026-11-01", "2026-11-30", w.ie, by=irish)
    (run_note,) = changes
    (invoice_id,), (exception_id,) = result.invoice_ids, result.exception_ids
    assert (run_note.resource_type, run_note.resource_id, run_note.legal_entity_id, run_note.before) == (
        "billing_run",
        result.run_id,
        w.ie,
        None,
    )
    assert run_note.after is not None
    assert (run_note.after["entries_billed"], run_note.after["invoices_touched"]) == (1, [invoice_id])
    assert run_note.after["exceptions_raised"] == [exception_id]
    with collecting() as changes:
        await app.approve(invoice_id, by=irish)
        await app.void(invoice_id, "wrong customer", by=irish)
        await app.resolve_exception(
            exception_id, bl.BILLING_EXCEPTION_RESOLUTION_WRITE_OFF, "goodwill", by=irish
        )
    assert [(c.resource_type, c.resource_id, c.legal_entity_id) for c in changes] == [
        ("invoice", invoice_id, w.ie),
        ("invoice", invoice_id, w.ie),
        ("billing_exception", exception_id, w.ie),
    ]
    approved, voided, resolved = changes
    assert (approved.before, approved.after) == (
        {"status": "DRAFT", "approved_by": ""},
        {"status": "APPROVED", "approved_by": "fin-ie", "approve_time": now},
    )
    assert (voided.before, voided.after) == (
        {"status": "APPROVED"},
        {"status": "VOID", "voided_by": "fin-ie", "void_reason": "wrong customer", "void_time": now},
    )
    assert (resolved.before, resolved.after) == (
        {"status": "OPEN"},
        {"status": "RESOLVED", "resolution": "WRITE_OFF", "resolved_by": "fin-ie", "note": "goodwill"},
    )


async def test_four_eyes_retrying_a_failed_posting_is_posting(world: World) -> None:
    w = world
    await approved_work(w)
    app = use_cases(w)
    anna, bob = w.finance_of(w.ie, subject="fin-anna"), w.finance_of(w.ie, subject="fin-bob")
    result = await app.run("2026-11-01", "2026-11-30", w.ie, by=anna)
    (invoice_id,) = result.invoice_ids
    await app.approve(invoice_id, by=anna)
    await app.request_posting(invoice_id, by=bob)
    # The ERP refused it: the job failed and finance has an ERP_POST_FAILED exception to resolve.
    async with BillingUnitOfWork(w.engine, MasterDataReader(w.md, tables.md_projection)) as uow:
        await uow.billing.set_posting(invoice_id, status="FAILED")
        failed = await uow.billing.raise_exception(
            ExceptionDraft("ERP_POST_FAILED", w.ie, "refused", (), Decimal(0), invoice_id=invoice_id),
            None,
            w.now,
        )
        await uow.commit()
    assert failed is not None
    with pytest.raises(PermissionDenied) as by_the_approver:
        await app.resolve_exception(failed, bl.BILLING_EXCEPTION_RESOLUTION_RETRY, "again", by=anna)
    assert by_the_approver.value.reason == "FOUR_EYES"
    with pytest.raises(PermissionDenied):
        await app.request_posting(invoice_id, by=anna)
    assert await w.scalar(
        "SELECT status FROM billing.posting_jobs WHERE invoice_id = :id", id=invoice_id
    ) == ("FAILED")
    await app.resolve_exception(failed, bl.BILLING_EXCEPTION_RESOLUTION_RETRY, "again", by=bob)
    assert await w.scalar(
        "SELECT status FROM billing.posting_jobs WHERE invoice_id = :id", id=invoice_id
    ) == ("QUEUED")
