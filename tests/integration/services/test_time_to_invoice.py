"""Time to invoice across real services: validation, approval, events, billing runs, KPIs."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.db import create_engine
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.observability.v1 import observability_service_pb2 as oba
from accrue.observability.v1 import observability_service_pb2_grpc as obg
from accrue.runtime.server import RunningService
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tka
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as tkg
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration


class Stubs:
    def __init__(self, md_: Any, tk_: Any, bl_: Any, ob_: Any) -> None:
        self.md, self.tk, self.bl, self.ob = md_, tk_, bl_, ob_


@pytest.fixture
async def stubs(start_service: Any, channel_to: Callable[[RunningService], grpc.aio.Channel]) -> Stubs:
    masterdata = await start_service("masterdata")
    address = f"127.0.0.1:{masterdata.grpc_port}"
    timekeeping = await start_service("timekeeping", masterdata_address=address)
    billing = await start_service("billing", masterdata_address=address)
    observability = await start_service("observability", metrics_interval_seconds=0.2)
    return Stubs(
        mdg.MasterDataServiceStub(channel_to(masterdata)),
        tkg.TimekeepingServiceStub(channel_to(timekeeping)),
        blg.BillingServiceStub(channel_to(billing)),
        obg.ObservabilityServiceStub(channel_to(observability)),
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def staffed_firm(s: Stubs, build_firm: Any) -> dict[str, Any]:
    f = await build_firm(s.md)
    f["assignment"] = (
        await s.md.CreateAssignment(
            mda.CreateAssignmentRequest(
                assignment=md.Assignment(
                    project_id=f["project"].id,
                    consultant_id=f["dev"].id,
                    labor_category_id=f["lc"].id,
                    start_date="2026-01-01",
                    allocation_percent="100",
                )
            )
        )
    ).assignment
    return f


def entry(f: dict[str, Any], day: str, hours: str, **extra: Any) -> tk.TimeEntry:
    return tk.TimeEntry(
        consultant_id=f["dev"].id, project_id=f["project"].id, work_date=day, hours=hours, **extra
    )


async def submit(s: Stubs, e: tk.TimeEntry) -> tk.TimeEntry:
    return (await s.tk.SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=e))).time_entry


async def test_submission_is_validated_and_routed_to_the_project_manager(
    stubs: Stubs, build_firm: Any
) -> None:
    f = await staffed_firm(stubs, build_firm)
    ok = await submit(stubs, entry(f, "2026-11-02", "7.75"))
    assert ok.status == tk.TIME_ENTRY_STATUS_PENDING_APPROVAL
    assert (ok.approver_id, ok.labor_category_id, ok.legal_entity_id) == (
        f["boss"].id,
        f["lc"].id,
        f["le"].id,
    )
    assert (ok.indicative_rate.amount, ok.indicative_rate.currency) == ("150.00", "GBP")
    bad = await submit(stubs, entry(f, "2025-12-31", "3.1"))
    assert bad.status == tk.TIME_ENTRY_STATUS_REJECTED
    assert [v.code for v in bad.violations] == ["HOURS_NOT_QUARTER", "DATE_OUTSIDE_PROJECT", "NO_ASSIGNMENT"]
    stored = (await stubs.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=bad.id))).time_entry
    assert [v.code for v in stored.violations] == [
        "HOURS_NOT_QUARTER",
        "DATE_OUTSIDE_PROJECT",
        "NO_ASSIGNMENT",
    ]
    queue = await stubs.tk.ListApprovals(tka.ListApprovalsRequest(approver_id=f["boss"].id))
    assert [e.id for e in queue.time_entries] == [ok.id]


async def test_resubmitting_by_external_ref_is_idempotent_and_a_changed_copy_conflicts(
    stubs: Stubs, build_firm: Any
) -> None:
    f = await staffed_firm(stubs, build_firm)
    ref = types_pb2.ExternalRef(system="harvest", id="t-1")
    first = await submit(stubs, entry(f, "2026-11-03", "8", external_ref=ref))
    again = await submit(stubs, entry(f, "2026-11-03", "8.00", external_ref=ref))
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await submit(stubs, entry(f, "2026-11-03", "6", external_ref=ref))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.id in (conflict.value.details() or "")


async def test_a_batch_answers_each_entry_in_order(stubs: Stubs, build_firm: Any) -> None:
    f = await staffed_firm(stubs, build_firm)
    reply = await stubs.tk.BatchSubmitTimeEntries(
        tka.BatchSubmitTimeEntriesRequest(
            time_entries=[
                entry(f, "2026-11-04", "8"),
                entry(f, "2026-11-04", "abc"),
                entry(f, "2026-11-04", "16.25"),
                entry(f, "2026-11-05", "4"),
            ]
        )
    )
    results = [r.time_entry for r in reply.results]
    assert [r.status for r in results] == [
        tk.TIME_ENTRY_STATUS_PENDING_APPROVAL,
        tk.TIME_ENTRY_STATUS_REJECTED,
        tk.TIME_ENTRY_STATUS_REJECTED,
        tk.TIME_ENTRY_STATUS_PENDING_APPROVAL,
    ]
    assert (results[1].id, [v.code for v in results[1].violations]) == ("", ["INVALID_DECIMAL"])
    assert [v.code for v in results[2].violations] == ["DAILY_LIMIT_EXCEEDED"]
    assert results[2].id


async def test_only_the_resolved_approver_approves(stubs: Stubs, build_firm: Any) -> None:
    f = await staffed_firm(stubs, build_firm)
    e = await submit(stubs, entry(f, "2026-11-02", "8"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stubs.tk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id, approver_id=f["dev"].id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    declined = await stubs.tk.DeclineTimeEntry(
        tka.DeclineTimeEntryRequest(id=e.id, approver_id=f["boss"].id, reason="wrong project")
    )
    assert declined.time_entry.status == tk.TIME_ENTRY_STATUS_DECLINED
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stubs.tk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id, approver_id=f["boss"].id))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_locked_period_refuses_time(stubs: Stubs, build_firm: Any) -> None:
    f = await staffed_firm(stubs, build_firm)
    await stubs.tk.CreatePeriodLock(
        tka.CreatePeriodLockRequest(
            period_lock=tk.PeriodLock(legal_entity_id=f["le"].id, locked_through="2026-10-31")
        )
    )
    locked = await submit(stubs, entry(f, "2026-10-30", "8"))
    assert [v.code for v in locked.violations] == ["PERIOD_LOCKED"]
    assert (await submit(stubs, entry(f, "2026-11-02", "8"))).status == tk.TIME_ENTRY_STATUS_PENDING_APPROVAL


async def approve_all(s: Stubs, f: dict[str, Any], days_hours: list[tuple[str, str]]) -> list[tk.TimeEntry]:
    out = []
    for day, hours in days_hours:
        e = await submit(s, entry(f, day, hours))
        assert e.status == tk.TIME_ENTRY_STATUS_PENDING_APPROVAL, list(e.violations)
        out.append(
            (
                await s.tk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id, approver_id=f["boss"].id))
            ).time_entry
        )
    return out


async def kpi_hours(s: Stubs) -> str:
    return str((await s.ob.GetKpis(oba.GetKpisRequest())).kpis.unbilled_approved_hours)


async def run_billing(s: Stubs, start: str = "2026-11-01", end: str = "2026-11-30") -> bl.BillingRun:
    return (
        await s.bl.CreateBillingRun(
            bla.CreateBillingRunRequest(billing_run=bl.BillingRun(period_start=start, period_end=end))
        )
    ).billing_run


async def test_approved_time_becomes_a_draft_at_the_rate_of_each_day(stubs: Stubs, build_firm: Any) -> None:
    f = await staffed_firm(stubs, build_firm)
    approved = await approve_all(
        stubs, f, [("2026-11-13", "8"), ("2026-11-14", "4.5"), ("2026-11-16", "7.25")]
    )
    assert all(a.status == tk.TIME_ENTRY_STATUS_APPROVED for a in approved)

    async def unbilled_is(hours: str) -> bool:
        return await kpi_hours(stubs) == hours

    await eventually(lambda: unbilled_is("19.75"))
    run = await run_billing(stubs)
    (invoice,) = run.invoices
    assert (invoice.status, invoice.currency, invoice.contract_id) == (
        bl.INVOICE_STATUS_DRAFT,
        "GBP",
        f["contract"].id,
    )
    # 12.5 h at 150.00 until the 14th, 7.25 h at 160.00 from the 15th: one line per rate.
    assert [(line.quantity, line.unit_price, line.amount) for line in invoice.lines] == [
        ("12.50", "150.00", "1875.00"),
        ("7.25", "160.00", "1160.00"),
    ]
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == ("3035.00", "0.00", "3035.00")
    assert sorted(i for line in invoice.lines for i in line.source_time_entry_ids) == sorted(
        a.id for a in approved
    )
    await eventually(lambda: unbilled_is("0.00"))


async def billing_has_work(database_url: str, entries: int) -> bool:
    """Billing's own consumer has taken the approved entries into its ledger."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text("SELECT count(*) FROM billing.wip_entries")) == entries
    finally:
        await engine.dispose()


async def test_billing_runs_are_idempotent_even_when_concurrent(
    stubs: Stubs, build_firm: Any, database_url: str
) -> None:
    f = await staffed_firm(stubs, build_firm)
    await approve_all(stubs, f, [("2026-11-02", "8")])

    async def billing_has_it() -> bool:
        return (await kpi_hours(stubs)) == "8.00"

    await eventually(billing_has_it)
    await eventually(lambda: billing_has_work(database_url, 1))
    first, second = await asyncio.gather(run_billing(stubs), run_billing(stubs))
    assert first.id == second.id
    assert [i.id for i in first.invoices] == [i.id for i in second.invoices]
    assert len(first.invoices) == 1
    listed = await stubs.bl.ListInvoices(bla.ListInvoicesRequest())
    assert len(listed.invoices) == 1
    third = await run_billing(stubs)
    assert [i.id for i in third.invoices] == [i.id for i in first.invoices]


async def test_a_rate_in_another_currency_needs_fx_else_an_exception(
    stubs: Stubs, build_firm: Any, database_url: str
) -> None:
    f = await staffed_firm(stubs, build_firm)
    # A euro contract priced from the pound rate card.
    eur = (
        await stubs.md.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(code="EURCO", name="Euro Co", legal_entity_id=f["le"].id, currency="EUR")
            )
        )
    ).customer
    project = (
        await stubs.md.CreateProject(
            mda.CreateProjectRequest(
                project=md.Project(
                    code="P2",
                    name="Euro project",
                    customer_id=eur.id,
                    legal_entity_id=f["le"].id,
                    manager_id=f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    await stubs.md.CreateContract(
        mda.CreateContractRequest(
            contract=md.Contract(
                code="K2",
                customer_id=eur.id,
                currency="EUR",
                lines=[
                    md.ContractLine(
                        project_id=project.id,
                        billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                        rate_card_id=f["card"].id,
                        tax_code="VAT-STD",
                    )
                ],
            )
        )
    )
    await stubs.md.CreateAssignment(
        mda.CreateAssignmentRequest(
            assignment=md.Assignment(
                project_id=project.id,
                consultant_id=f["dev"].id,
                labor_category_id=f["lc"].id,
                start_date="2026-01-01",
                allocation_percent="50",
            )
        )
    )
    # Three dated tax rates: the one in force at the period end (30 November) is 0.20 — not the
    # one in force on the work date (0.175), nor the newest (0.25, from December).
    taxes = {
        rate: (
            await stubs.md.CreateTaxRate(
                mda.CreateTaxRateRequest(
                    tax_rate=md.TaxRate(tax_code="VAT-STD", rate=rate, effective_from=day)
                )
            )
        ).tax_rate
        for rate, day in (("0.175", "2020-01-01"), ("0.20", "2026-11-10"), ("0.25", "2026-12-01"))
    }
    e = await submit(
        stubs,
        tk.TimeEntry(consultant_id=f["dev"].id, project_id=project.id, work_date="2026-11-02", hours="3"),
    )
    await stubs.tk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id, approver_id=f["boss"].id))
    await eventually(lambda: _unbilled(stubs, "3.00"))
    await eventually(lambda: billing_has_work(database_url, 1))
    run = await run_billing(stubs)
    assert list(run.invoices) == []
    assert [x.kind for x in run.exceptions] == [bl.BILLING_EXCEPTION_KIND_MISSING_FX]
    assert list(run.exceptions[0].time_entry_ids) == [e.id]

    # Likewise FX: the period end's rate (1.15 from 20 November), not the work date's (1.10),
    # nor December's (1.30).
    fx = {
        rate: (
            await stubs.md.CreateFxRate(
                mda.CreateFxRateRequest(
                    fx_rate=md.FxRate(base="GBP", quote="EUR", rate=rate, effective_date=day)
                )
            )
        ).fx_rate
        for rate, day in (("1.1000", "2026-10-01"), ("1.1500", "2026-11-20"), ("1.3000", "2026-12-01"))
    }
    await eventually(lambda: billing_projects(database_url, "fx_rate", 3))
    await eventually(lambda: billing_projects(database_url, "tax_rate", 3))
    run = await run_billing(stubs)
    (invoice,) = run.invoices
    (line,) = invoice.lines
    # Lineage: the line names the rate-card entry, FX rate and tax rate it was priced with.
    (november_rate,) = [r for r in f["card"].rates if r.rate == "150.00"]
    assert (line.rate_card_entry_id, line.rate_card_rate, line.rate_card_currency) == (
        november_rate.id,
        "150.00",
        "GBP",
    )
    assert (line.fx_rate_id, line.fx_rate) == (fx["1.1500"].id, "1.15")
    assert (line.tax_code, line.tax_rate_id, line.tax_rate) == ("VAT-STD", taxes["0.20"].id, "0.2")
    # 150.00 GBP × 1.15 = 172.50 EUR; 3 h = 517.50; VAT 20 % = 103.50
    assert (invoice.currency, line.unit_price, line.amount, line.tax_amount, invoice.total) == (
        "EUR",
        "172.50",
        "517.50",
        "103.50",
        "621.00",
    )
    again = await run_billing(stubs)
    assert len(again.exceptions) == 0


async def billing_projects(database_url: str, kind: str, count: int) -> bool:
    """Billing's copy of master data holds count records of the kind."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT count(*) FROM billing.md_projection WHERE kind = :kind"), {"kind": kind}
            )
            return bool(found == count)
    finally:
        await engine.dispose()


async def _unbilled(s: Stubs, hours: str) -> bool:
    return await kpi_hours(s) == hours


async def test_summaries_for_reconciliation_agree_stage_by_stage(
    stubs: Stubs, build_firm: Any, database_url: str
) -> None:
    f = await staffed_firm(stubs, build_firm)
    approved = await approve_all(stubs, f, [("2026-11-02", "8"), ("2026-11-03", "4")])
    await eventually(lambda: billing_has_work(database_url, 2))
    period = {"period_start": "2026-11-01", "period_end": "2026-11-30", "legal_entity_id": f["le"].id}
    (time_summary,) = (
        await stubs.tk.SummarizeApprovedTime(tka.SummarizeApprovedTimeRequest(**period))
    ).projects
    assert (time_summary.entry_count, time_summary.hours, time_summary.billable_hours) == (
        2,
        "12.00",
        "12.00",
    )
    assert {e.time_entry_id for e in time_summary.entries} == {a.id for a in approved}
    (before,) = (await stubs.bl.SummarizeBilledWork(bla.SummarizeBilledWorkRequest(**period))).projects
    assert (before.hours, before.unbilled_hours, before.billed_hours) == ("12.00", "12.00", "0.00")
    (invoice,) = (await run_billing(stubs)).invoices
    (after,) = (await stubs.bl.SummarizeBilledWork(bla.SummarizeBilledWorkRequest(**period))).projects
    assert (after.unbilled_hours, after.billed_hours, after.posted_hours) == ("0.00", "12.00", "0.00")
    assert {(e.invoice_id, e.invoice_status) for e in after.entries} == {
        (invoice.id, bl.INVOICE_STATUS_DRAFT)
    }
