"""Billing use cases: the ledger, billing runs, the invoice lifecycle, exceptions and caps."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accrue.billing.v1 import resources_pb2 as bl
from accrue.eventbus import Event
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import ProjectionStore
from accrue.money import format_decimal, format_money, parse_decimal
from accrue.runtime import FailedPrecondition, InvalidArgument, NotFound, Violation
from accrue.runtime.audit import note as audit_note
from accrue.runtime.clock import UTC_ZONE, Clock, is_time_zone, local_date
from accrue.runtime.identity import Principal
from accrue.runtime.validation import Violations
from accrue.services.billing.adapters.erp import ErpAdapter, ErpError
from accrue.services.billing.adapters.repository import ExceptionDraft
from accrue.services.billing.adapters.tables import md_projection
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain import lifecycle
from accrue.services.billing.domain.access import (
    FourEyes,
    check_run_scope,
    not_found,
    require_visible,
    scope_of,
)
from accrue.services.billing.domain.invoicing import thresholds_reached
from accrue.services.billing.domain.lifecycle import WORK_KINDS, Resolution
from accrue.services.billing.domain.periods import Period, PeriodKind, due_since
from accrue.services.billing.service_layer.runs import RunOutcome, RunPricer, RunScope
from accrue.telemetry import get_logger

log = get_logger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_THRESHOLDS = (80, 90, 100)
EVENT_BATCH = 100


@dataclass
class RunResult:
    """A billing run: every invoice it holds and the exceptions this call raised."""

    run_id: str
    legal_entity_id: str
    period_start: dt.date
    period_end: dt.date
    create_time: dt.datetime
    billing_period: str = ""
    scheduled: bool = False
    cutoff_time: dt.datetime | None = None
    invoice_ids: list[str] = field(default_factory=list)
    exception_ids: list[str] = field(default_factory=list)
    entries_billed: int = 0


def _billing_period(value: int) -> str:
    if value == md.BILLING_PERIOD_UNSPECIFIED:
        return ""
    return str(md.BillingPeriod.Name(md.BillingPeriod.ValueType(value))).removeprefix("BILLING_PERIOD_")


def _scope_lock(*parts: object) -> int:
    """An advisory-lock key for a run's scope: two calls for one scope serialize on it."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) - 2**31


class Billing:
    """The billing application service."""

    def __init__(
        self,
        uow_factory: Callable[[], BillingUnitOfWork],
        clock: Clock,
        *,
        erp: ErpAdapter | None = None,
        cap_thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        cutoff_delay: dt.timedelta = dt.timedelta(hours=48),
        four_eyes: FourEyes = FourEyes(),
    ) -> None:
        self._uow = uow_factory
        self._clock = clock
        self._erp = erp
        self._thresholds = tuple(sorted(set(cap_thresholds)))
        self._cutoff_delay = cutoff_delay
        self._four_eyes = four_eyes

    # -- the ledger ---------------------------------------------------------------------------

    async def record_approved(self, uow: BillingUnitOfWork, entry: Any) -> bool:
        """time.entry.approved: add approved time to unbilled work (once; the entry id is the key)."""
        return await uow.billing.add_work(_work_row(entry))

    async def record_reversed(
        self, uow: BillingUnitOfWork, original: Any, reversal: Any, occurred_at: dt.datetime | None
    ) -> None:
        """time.entry.reversed: credit invoiced time at the next run; drop time never invoiced.

        The reversal is a ledger row of its own (negative hours). When the original is on a live
        invoice the reversal waits, unbilled, to become a CREDIT line; otherwise both rows are
        held CANCELLED and neither is ever billed. Applying the event twice changes nothing.
        """
        await uow.billing.lock_legal_entities([original.legal_entity_id], shared=True)
        if await uow.billing.work_for_update(reversal.id) is not None:
            return
        row = await uow.billing.work_for_update(original.id)
        if row is None:
            # The reversal overtook the approval (replicas may reorder): take the original from
            # the event, which carries its full state.
            await uow.billing.add_work(_work_row(original))
            row = await uow.billing.work_for_update(original.id)
        assert row is not None
        invoiced = row.invoice_id is not None
        reversal_row = _work_row(reversal)
        reversal_row["reverses_id"] = original.id
        reversal_row["billable"] = row.billable
        if reversal_row["approve_time"] is None:
            reversal_row["approve_time"] = occurred_at or self._clock()
        if not (invoiced and row.billable):
            reversal_row["hold"] = "CANCELLED"
        await uow.billing.add_work(reversal_row)
        values: dict[str, Any] = {"reversed_by_id": reversal.id}
        if not invoiced and row.hold in (None, "FIXED_FEE"):
            # Time that never reached an invoice (fixed-fee time included) was never worked.
            values["hold"] = "CANCELLED"
        await uow.billing.set_work([original.id], **values)

    async def record_milestone(
        self,
        uow: BillingUnitOfWork,
        milestone: Any,
        contract_id: str,
        project_id: str,
        occurred_at: dt.datetime | None,
    ) -> bool:
        """md.milestone.completed: the milestone is billable, once (its id is the key).

        Its completion date is the legal entity's calendar date of the completion instant, so it
        falls in the period that legal entity's runs bill.
        """
        projects = await uow.masterdata.records(uow.connection, "project", [project_id])
        project = projects.get(project_id)
        if not isinstance(project, md.Project):
            raise NotFound(
                f"milestone {milestone.id} is on project {project_id}, which master data does not know"
            )
        complete_time = (
            milestone.complete_time.ToDatetime(dt.UTC)
            if milestone.HasField("complete_time")
            else occurred_at or self._clock()
        )
        zones = await time_zones(uow, [project.legal_entity_id])
        return await uow.billing.add_milestone(
            {
                "milestone_id": milestone.id,
                "contract_id": contract_id,
                "contract_line_id": milestone.contract_line_id,
                "project_id": project_id,
                "legal_entity_id": project.legal_entity_id,
                "name": milestone.name,
                "amount": parse_decimal(milestone.amount),
                "complete_date": local_date(complete_time, zones[project.legal_entity_id]),
                "complete_time": complete_time,
            }
        )

    # -- billing runs -------------------------------------------------------------------------

    async def run(
        self,
        period_start: str,
        period_end: str,
        legal_entity_id: str,
        billing_period: int = 0,
        *,
        by: Principal,
    ) -> RunResult:
        """Turn the period's unbilled work into drafts per contract; idempotent per scope.

        Running again for the same scope and period returns the same run: work already on a
        draft is never taken twice, and work approved since joins the run's drafts. A caller
        limited to some legal entities runs only for one of them (domain/access.py).
        """
        v = Violations("billing_run")
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        if billing_period and billing_period not in md.BillingPeriod.values():
            v.add(
                "billing_period", "INVALID_ENUM", f"billing_period {billing_period} is not a billing period"
            )
        v.raise_if_any("the billing run is invalid")
        assert start is not None
        assert end is not None
        check_run_scope(by, legal_entity_id)
        return await self._run(legal_entity_id, start, end, _billing_period(billing_period))

    async def run_due(self, now: dt.datetime | None = None) -> list[RunResult]:
        """The scheduler's tick: bill every period whose cut-off has passed, once per legal entity.

        Periods and cut-offs are each legal entity's own, in its time zone: a Brisbane entity's
        month is due hours before a UTC one's. Every period due since the legal entity's last
        scheduled run of its kind is billed, oldest first (at most MAX_CATCH_UP back), so a
        period missed while the scheduler was down gets its own run.
        """
        now = now or self._clock()
        async with self._uow() as uow:
            earliest = await uow.billing.earliest_unbilled()
            zones = await time_zones(uow, earliest)
            last = {kind: await uow.billing.last_scheduled_ends(kind.value) for kind in PeriodKind}
            await uow.commit()  # legal entities read through to master data stay projected
        results: list[RunResult] = []
        for kind in PeriodKind:
            # Legal entities in one zone share their periods' cut-offs: one query per (period,
            # zone) finds which have work due. A period ending before a legal entity's oldest
            # unbilled day has nothing to bill there.
            due: dict[tuple[Period, str], list[str]] = {}
            for legal_entity_id, first_day in earliest.items():
                zone_name = zones[legal_entity_id]
                for period in due_since(
                    kind, now, self._cutoff_delay, zone_name, last[kind].get(legal_entity_id)
                ):
                    if period.end >= first_day:
                        due.setdefault((period, zone_name), []).append(legal_entity_id)
            for (period, zone_name), candidates in sorted(due.items()):
                cutoff = period.cutoff(self._cutoff_delay, zone_name)
                async with self._uow() as uow:
                    entities = await uow.billing.legal_entities_with_work(period.end, cutoff, candidates)
                for legal_entity_id in entities:
                    results.append(
                        await self._run(
                            legal_entity_id,
                            period.start,
                            period.end,
                            kind.value,
                            scheduled=True,
                            cutoff=cutoff,
                        )
                    )
        return results

    async def _run(
        self,
        legal_entity_id: str,
        start: dt.date,
        end: dt.date,
        billing_period: str,
        *,
        scheduled: bool = False,
        cutoff: dt.datetime | None = None,
    ) -> RunResult:
        now = self._clock()
        async with self._uow() as uow:
            # Two calls for the same scope serialize here; the second finds nothing left to bill.
            await uow.connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock($1)",
                (_scope_lock(legal_entity_id, start, end, billing_period),),
            )
            entities = (
                [legal_entity_id] if legal_entity_id else await uow.billing.legal_entities_in_scope(end)
            )
            await uow.billing.lock_legal_entities(entities)
            run_id, created, new = await uow.billing.run_for(
                legal_entity_id, start, end, billing_period, now, scheduled=scheduled, cutoff=cutoff
            )
            outcome = RunOutcome()
            if new or not scheduled:
                # A scheduled run happens once, at its cut-off; what is approved later waits for
                # the next period's run.
                scope = RunScope(
                    run_id, legal_entity_id, start, end, None if scheduled else start, cutoff, billing_period
                )
                outcome = await RunPricer(uow, scope, now).price()
            raised = await self.raise_exceptions(uow, outcome.problems, run_id, now)
            await self._supersede_settled(uow, legal_entity_id, now)
            await self._cap_thresholds(uow, outcome, now)
            invoice_ids = await uow.billing.invoice_ids({"billing_run_id": run_id}, None, 100_000)
            scope_fields = {
                "period_start": start,
                "period_end": end,
                "billing_period": billing_period,
                "scheduled": scheduled,
            }
            # "" for a run of every legal entity: the audit trail's firm-wide chain.
            audit_note(
                "billing_run",
                run_id,
                legal_entity_id,
                None if new else scope_fields,
                {
                    **scope_fields,
                    "entries_billed": outcome.entries_billed,
                    "invoices_touched": sorted(outcome.touched_invoices),
                    "exceptions_raised": sorted(raised),
                },
            )
            # In batches, so a run of a million entries never holds all their lineage at once.
            touched = outcome.touched_invoices
            for i in range(0, len(touched), EVENT_BATCH):
                for invoice in await uow.billing.invoices(touched[i : i + EVENT_BATCH]):
                    uow.events.add(
                        Event(
                            "billing.invoice.drafted",
                            invoice.legal_entity_id,
                            bev.InvoiceDrafted(invoice=invoice),
                            occurred_at=now,
                        )
                    )
            await uow.commit()
        log.info(
            "billing_run",
            run_id=run_id,
            legal_entity_id=legal_entity_id or "all",
            period=f"{start}..{end}",
            billing_period=billing_period or "all",
            scheduled=scheduled,
            entries_billed=outcome.entries_billed,
            entries_fixed_fee=outcome.entries_fixed_fee,
            invoices_touched=len(outcome.touched_invoices),
            exceptions_raised=len(raised),
        )
        return RunResult(
            run_id,
            legal_entity_id,
            start,
            end,
            created,
            billing_period,
            scheduled,
            cutoff,
            invoice_ids,
            raised,
            outcome.entries_billed,
        )

    async def raise_exceptions(
        self, uow: BillingUnitOfWork, problems: Iterable[ExceptionDraft], run_id: str | None, now: dt.datetime
    ) -> list[str]:
        """Inside uow: record new exceptions with their events; open ones they restate are closed."""
        raised: list[str] = []
        for problem in problems:
            exception_id = await uow.billing.raise_exception(problem, run_id, now)
            if exception_id is None:
                continue
            raised.append(exception_id)
            older = await uow.billing.overlapping_open(
                problem.kind,
                problem.contract_line_id or problem.project_id,
                problem.time_entry_ids,
                exception_id,
            )
            await self.close_exceptions(
                uow, older, Resolution.SUPERSEDED, "billing", f"restated by exception {exception_id}", now
            )
        for exception in await uow.billing.exceptions({}, None, len(raised) or 1, ids=raised):
            uow.events.add(
                Event(
                    "billing.exception.raised",
                    exception.legal_entity_id or "none",
                    bev.BillingExceptionRaised(
                        billing_exception=exception, legal_entity_id=exception.legal_entity_id
                    ),
                    occurred_at=now,
                )
            )
        return raised

    async def close_exceptions(
        self,
        uow: BillingUnitOfWork,
        ids: Sequence[str],
        resolution: Resolution,
        actor: str,
        note: str,
        now: dt.datetime,
    ) -> list[bl.BillingException]:
        """Inside uow: mark exceptions RESOLVED and publish billing.exception.resolved for each."""
        if not ids:
            return []
        await uow.billing.resolve_exceptions(ids, resolution.value, actor, note, now)
        resolved = await uow.billing.exceptions({}, None, len(ids), ids=ids)
        for exception in resolved:
            audit_note(
                "billing_exception",
                exception.id,
                exception.legal_entity_id,
                {"status": "OPEN"},
                {"status": "RESOLVED", "resolution": resolution.value, "resolved_by": actor, "note": note},
            )
            uow.events.add(
                Event(
                    "billing.exception.resolved",
                    exception.legal_entity_id or "none",
                    bev.BillingExceptionResolved(
                        billing_exception=exception, legal_entity_id=exception.legal_entity_id
                    ),
                    occurred_at=now,
                )
            )
        return resolved

    async def _supersede_settled(
        self, uow: BillingUnitOfWork, legal_entity_id: str, now: dt.datetime
    ) -> None:
        """Open work exceptions whose work has all been billed, written off or cancelled are done."""
        settled = await uow.billing.settled_open_exceptions(legal_entity_id, WORK_KINDS)
        await self.close_exceptions(
            uow, settled, Resolution.SUPERSEDED, "billing", "nothing left unbilled", now
        )

    async def _cap_thresholds(self, uow: BillingUnitOfWork, outcome: RunOutcome, now: dt.datetime) -> None:
        """Announce each cap threshold a CAPPED line has newly reached."""
        for line_id, capped in outcome.capped.items():
            billed = await uow.billing.billed_on_line(line_id)
            reached = thresholds_reached(capped.cap, billed, self._thresholds)
            for percent in await uow.billing.sync_cap_thresholds(line_id, reached, billed, now):
                uow.events.add(
                    Event(
                        "billing.cap.threshold_reached",
                        capped.legal_entity_id,
                        bev.CapThresholdReached(
                            contract_id=capped.contract_id,
                            contract_line_id=line_id,
                            project_id=capped.project_id,
                            legal_entity_id=capped.legal_entity_id,
                            threshold_percent=percent,
                            cap_amount=format_money(capped.cap, capped.currency),
                            billed_amount=format_money(billed, capped.currency),
                            currency=capped.currency,
                        ),
                        occurred_at=now,
                    )
                )

    async def work_summary(
        self, period_start: str, period_end: str, legal_entity_id: str, *, by: Principal
    ) -> list[Any]:
        """Every entry billing holds for the period, with its invoice status (for reconciliation).

        Only the caller's legal entities' entries (another's, named, is simply not there).
        """
        v = Violations()
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the period is invalid")
        assert start is not None
        assert end is not None
        async with self._uow() as uow:
            return await uow.billing.work_in(start, end, legal_entity_id, scope_of(by))

    # -- the invoice lifecycle ------------------------------------------------------------------

    async def approve(self, invoice_id: str, *, by: Principal) -> bl.Invoice:
        """DRAFT → APPROVED, as finance; the approver is the caller (four eyes judge it later)."""
        now = self._clock()
        async with self._uow() as uow:
            head = await self._invoice_for_update(uow, invoice_id, by)
            lifecycle.check_approve(invoice_id, head.status)
            await uow.billing.set_invoice(
                invoice_id, status="APPROVED", approve_time=now, approved_by=by.subject, update_time=now
            )
            audit_note(
                "invoice",
                invoice_id,
                head.legal_entity_id,
                {"status": head.status, "approved_by": head.approved_by},
                {"status": "APPROVED", "approved_by": by.subject, "approve_time": now},
            )
            (invoice,) = await uow.billing.invoices([invoice_id])
            uow.events.add(
                Event(
                    "billing.invoice.approved",
                    invoice.legal_entity_id,
                    bev.InvoiceApproved(invoice=invoice),
                    occurred_at=now,
                )
            )
            await uow.commit()
        return invoice

    async def request_posting(self, invoice_id: str, *, by: Principal) -> bl.Invoice:
        """Queue an approved invoice for the ERP (again, after a failure); posted ones stay as they are.

        With four eyes on for the invoice's legal entity its approver may not ask for this.
        """
        if self._erp is None:
            raise FailedPrecondition("no ERP is configured for posting", reason="NO_ERP")
        now = self._clock()
        actor = by.subject
        async with self._uow() as uow:
            head = await self._invoice_for_update(uow, invoice_id, by)
            lifecycle.check_post(invoice_id, head.status)
            if head.status == "APPROVED" and head.posting_status in (None, "FAILED"):
                self._four_eyes.check_post(invoice_id, head.legal_entity_id, head.approved_by, by)
                await uow.billing.queue_posting(
                    invoice_id, head.legal_entity_id, self._erp.system, actor, now
                )
                audit_note(
                    "invoice",
                    invoice_id,
                    head.legal_entity_id,
                    {"posting_status": head.posting_status},
                    {"posting_status": "QUEUED", "posting_requested_by": actor},
                )
                if head.posting_status == "FAILED":
                    failed = await uow.billing.open_exceptions_for_invoice(invoice_id)
                    await self.close_exceptions(
                        uow, failed, Resolution.RETRY, actor, "posting asked for again", now
                    )
            (invoice,) = await uow.billing.invoices([invoice_id])
            await uow.commit()
        return invoice

    async def void(self, invoice_id: str, reason: str, *, by: Principal) -> bl.Invoice:
        """DRAFT or APPROVED → VOID: the work and milestones on it are unbilled again."""
        v = Violations()
        v.required("reason", reason)
        v.raise_if_any("the void is invalid")
        now = self._clock()
        actor = by.subject
        async with self._uow() as uow:
            # The legal entity's billing lock first, then the row: the order a run takes them in.
            await uow.billing.lock_legal_entities(
                await uow.billing.legal_entities_of("invoice", invoice_id), shared=True
            )
            head = await self._invoice_for_update(uow, invoice_id, by)
            lifecycle.check_void(invoice_id, head.status, head.posting_status)
            if head.posting_status == "FAILED" and self._erp is not None:
                try:
                    found = await self._erp.find_posted(invoice_id)
                except ErpError as exc:
                    raise FailedPrecondition(
                        f"cannot tell whether the ERP holds invoice {invoice_id}: {exc}", reason="ERP_UNKNOWN"
                    ) from exc
                if found is not None:
                    raise FailedPrecondition(
                        f"the ERP holds invoice {invoice_id} as posted document {found.document_id}; "
                        "post it again to record that instead of voiding it",
                        reason="POSTED_IN_ERP",
                    )
            work, _ = await uow.billing.release_invoice(invoice_id)
            reversed_originals = [r.time_entry_id for r in work if r.reversed_by_id and not r.reverses_id]
            credited = await uow.billing.live_credits_for(reversed_originals)
            if credited:
                raise FailedPrecondition(
                    f"invoice {invoice_id} bills time already credited on a later invoice: "
                    + ", ".join(credited)
                    + "; void that invoice first",
                    reason="CREDITED_ELSEWHERE",
                )
            # Reversed time that comes off the invoice was never billed after all: cancel it and
            # its reversal (which then owes no credit).
            reversals = [r.reversed_by_id for r in work if r.reversed_by_id and not r.reverses_id]
            await uow.billing.set_work(reversed_originals, hold="CANCELLED")
            await uow.billing.set_work(reversals, hold="CANCELLED")
            await uow.billing.set_invoice(
                invoice_id, status="VOID", void_time=now, voided_by=actor, void_reason=reason, update_time=now
            )
            audit_note(
                "invoice",
                invoice_id,
                head.legal_entity_id,
                {"status": head.status},
                {"status": "VOID", "voided_by": actor, "void_reason": reason, "void_time": now},
            )
            failed = await uow.billing.open_exceptions_for_invoice(invoice_id)
            await self.close_exceptions(uow, failed, Resolution.SUPERSEDED, actor, "invoice voided", now)
            await self._recheck_caps(
                uow, await uow.billing.capped_lines_of(invoice_id), head.legal_entity_id, now
            )
            (invoice,) = await uow.billing.invoices([invoice_id])
            uow.events.add(
                Event(
                    "billing.invoice.voided",
                    invoice.legal_entity_id,
                    bev.InvoiceVoided(invoice=invoice, reason=reason),
                    occurred_at=now,
                )
            )
            await uow.commit()
        return invoice

    async def _recheck_caps(
        self, uow: BillingUnitOfWork, line_ids: Iterable[str], legal_entity_id: str, now: dt.datetime
    ) -> None:
        """After a void, thresholds no longer reached are re-armed (announced again if crossed later)."""
        store = ProjectionStore(uow.connection, md_projection)
        lines = await store.get_many("contract_line", line_ids)
        for line_id, line in lines.items():
            if isinstance(line, md.ContractLine) and line.billing_model == md.BILLING_MODEL_CAPPED:
                cap = parse_decimal(line.cap_amount or "0")
                billed = await uow.billing.billed_on_line(line_id)
                await uow.billing.sync_cap_thresholds(
                    line_id, thresholds_reached(cap, billed, self._thresholds), billed, now
                )

    async def _invoice_for_update(self, uow: BillingUnitOfWork, invoice_id: str, by: Principal) -> Any:
        """The invoice's row, locked; NotFound when it is missing or another legal entity's."""
        if not invoice_id:
            raise InvalidArgument("id is required", [Violation("id", "REQUIRED", "id names the invoice")])
        head = await uow.billing.invoice_for_update(invoice_id)
        if head is None:
            raise not_found("invoice", invoice_id)
        require_visible(by, head.legal_entity_id, "invoice", invoice_id)
        return head

    # -- exceptions ---------------------------------------------------------------------------

    async def resolve_exception(
        self, exception_id: str, resolution: int, note: str, *, by: Principal
    ) -> bl.BillingException:
        """Resolve an open exception: bill the overage, write the work off, or retry.

        Retrying a failed posting is posting: four eyes apply as to PostInvoice.
        """
        name = (
            str(
                bl.BillingExceptionResolution.Name(bl.BillingExceptionResolution.ValueType(resolution))
            ).removeprefix("BILLING_EXCEPTION_RESOLUTION_")
            if resolution in bl.BillingExceptionResolution.values()
            else str(resolution)
        )
        if name in ("UNSPECIFIED", Resolution.SUPERSEDED.value):
            name = ""
        now = self._clock()
        actor = by.subject
        async with self._uow() as uow:
            await uow.billing.lock_legal_entities(
                await uow.billing.legal_entities_of("exception", exception_id), shared=True
            )
            row = await uow.billing.exception_for_update(exception_id)
            if row is None:
                raise not_found("billing exception", exception_id)
            require_visible(by, row.legal_entity_id, "billing exception", exception_id)
            chosen = lifecycle.check_resolution(exception_id, row.kind, row.status, name)
            entries, milestone_ids = list(row.time_entry_ids), list(row.milestone_ids)
            if chosen == Resolution.WRITE_OFF:
                await uow.billing.set_work(entries, hold="WRITTEN_OFF", hold_ref=exception_id)
                await uow.billing.set_milestones(milestone_ids, hold="WRITTEN_OFF", hold_ref=exception_id)
            elif chosen == Resolution.BILL_OVERAGE:
                await uow.billing.set_work(entries, overage_approved=True, hold_ref=exception_id)
            elif row.kind == "ERP_POST_FAILED":
                if self._erp is None:
                    raise FailedPrecondition("no ERP is configured for posting", reason="NO_ERP")
                approver = await uow.billing.approver_of(row.invoice_id)
                self._four_eyes.check_post(row.invoice_id, row.legal_entity_id, approver, by)
                await uow.billing.queue_posting(
                    row.invoice_id, row.legal_entity_id, self._erp.system, actor, now
                )
            (resolved,) = await self.close_exceptions(uow, [exception_id], chosen, actor, note, now)
            await uow.commit()
        return resolved

    # -- caps ---------------------------------------------------------------------------------

    async def cap_status(self, contract_line_id: str, *, by: Principal) -> bl.CapStatus:
        """A CAPPED line's cap, what is billed and posted against it, and what remains.

        The line is its project's legal entity's: another entity's line is NotFound.
        """
        if not contract_line_id:
            raise InvalidArgument(
                "contract_line_id is required",
                [Violation("contract_line_id", "REQUIRED", "contract_line_id names the CAPPED line")],
            )
        async with self._uow() as uow:
            store = ProjectionStore(uow.connection, md_projection)
            line = (await store.get_many("contract_line", [contract_line_id])).get(contract_line_id)
            if not isinstance(line, md.ContractLine):
                raise not_found("contract line", contract_line_id)
            if scope_of(by) is not None:
                projects = await uow.masterdata.records(uow.connection, "project", [line.project_id])
                project = projects.get(line.project_id)
                owner = project.legal_entity_id if isinstance(project, md.Project) else ""
                require_visible(by, owner, "contract line", contract_line_id)
            if line.billing_model != md.BILLING_MODEL_CAPPED:
                raise FailedPrecondition(
                    f"contract line {contract_line_id} is not CAPPED", reason="NOT_CAPPED"
                )
            contract = await _contract_of_line(uow, contract_line_id)
            currency = contract.currency if contract is not None else ""
            cap = parse_decimal(line.cap_amount or "0")
            billed = await uow.billing.billed_on_line(contract_line_id)
            posted = await uow.billing.posted_on_line(contract_line_id)
            excess, excess_hours = await uow.billing.open_cap_excess(contract_line_id)
            reached = await uow.billing.thresholds_of(contract_line_id)

        def money(value: Decimal) -> str:
            return format_money(value, currency) if currency else format_decimal(value)

        used = (billed * 100 / cap).quantize(Decimal("0.01")) if cap > 0 else Decimal(0)
        return bl.CapStatus(
            contract_line_id=contract_line_id,
            contract_id=contract.id if contract is not None else "",
            project_id=line.project_id,
            currency=currency,
            cap_amount=money(cap),
            billed_amount=money(billed),
            posted_amount=money(posted),
            remaining_amount=money(max(cap - billed, Decimal(0))),
            used_percent=format_decimal(used, 2),
            thresholds_reached=reached,
            excess_amount=money(excess),
            excess_hours=format_decimal(excess_hours, 2),
        )

    # -- reads --------------------------------------------------------------------------------

    async def get_invoice(self, invoice_id: str, *, by: Principal) -> bl.Invoice:
        """One invoice with its lines, or NOT_FOUND (another legal entity's too)."""
        async with self._uow() as uow:
            found = await uow.billing.invoices([invoice_id])
        if not found:
            raise not_found("invoice", invoice_id)
        require_visible(by, found[0].legal_entity_id, "invoice", invoice_id)
        return found[0]

    async def get_run(self, run_id: str, *, by: Principal) -> bl.BillingRun:
        """A run with all its invoices and the exceptions it raised.

        A run of another legal entity is NotFound; a run of every legal entity shows a scoped
        caller only its own legal entities' invoices and exceptions.
        """
        async with self._uow() as uow:
            row = await uow.billing.run(run_id)
            if row is None:
                raise not_found("billing run", run_id)
            if row.legal_entity_key:
                require_visible(by, row.legal_entity_key, "billing run", run_id)
            scope = scope_of(by)
            invoice_ids = await uow.billing.invoice_ids({"billing_run_id": run_id}, None, 100_000, scope)
            exception_ids = await uow.billing.run_exceptions(run_id, scope)
            result = RunResult(
                row.id,
                row.legal_entity_key,
                row.period_start,
                row.period_end,
                row.create_time,
                row.billing_period,
                row.scheduled,
                row.cutoff_time,
                invoice_ids,
                exception_ids,
            )
        return await self.describe_run(result)

    async def describe_run(self, result: RunResult) -> bl.BillingRun:
        """The BillingRun message for a run result (its invoices as they are now)."""
        async with self._uow() as uow:
            invoices = await uow.billing.invoices(result.invoice_ids)
            exceptions = await uow.billing.exceptions(
                {}, None, len(result.exception_ids) or 1, ids=result.exception_ids
            )
        run = bl.BillingRun(
            id=result.run_id,
            legal_entity_id=result.legal_entity_id,
            period_start=result.period_start.isoformat(),
            period_end=result.period_end.isoformat(),
            invoices=invoices,
            exceptions=exceptions,
            scheduled=result.scheduled,
        )
        if result.billing_period:
            run.billing_period = md.BillingPeriod.Value(f"BILLING_PERIOD_{result.billing_period}")
        run.create_time.FromDatetime(result.create_time)
        if result.cutoff_time is not None:
            run.cutoff_time.FromDatetime(result.cutoff_time)
        return run

    async def list_invoices(
        self, filters: Mapping[str, Any], page_size: int, page_token: str, *, by: Principal
    ) -> tuple[list[bl.Invoice], str]:
        """A page of invoices, newest first: the caller's legal entities' only (in SQL)."""
        size = _page_size(page_size)
        async with self._uow() as uow:
            ids = await uow.billing.invoice_ids(filters, page_token or None, size + 1, scope_of(by))
            found = await uow.billing.invoices(ids[:size])
        return found, ids[size - 1] if len(ids) > size else ""

    async def get_exception(self, exception_id: str, *, by: Principal) -> bl.BillingException:
        """One exception, or NOT_FOUND (another legal entity's too)."""
        async with self._uow() as uow:
            found = await uow.billing.exceptions({}, None, 1, ids=[exception_id])
        if not found:
            raise not_found("billing exception", exception_id)
        require_visible(by, found[0].legal_entity_id, "billing exception", exception_id)
        return found[0]

    async def list_exceptions(
        self, filters: Mapping[str, Any], page_size: int, page_token: str, *, by: Principal
    ) -> tuple[list[bl.BillingException], str]:
        """A page of the exception queue, newest first: the caller's legal entities' only (in SQL)."""
        size = _page_size(page_size)
        async with self._uow() as uow:
            found = await uow.billing.exceptions(filters, page_token or None, size + 1, scope=scope_of(by))
        return found[:size], found[size - 1].id if len(found) > size else ""


async def time_zones(uow: BillingUnitOfWork, legal_entity_ids: Iterable[str]) -> dict[str, str]:
    """Each legal entity's time zone, whose calendar its business dates follow (UTC by default).

    A legal entity master data does not know, or whose zone this machine does not know, is
    taken as UTC (and the latter logged): billing it a few hours off beats never billing it.
    """
    ids = sorted(set(legal_entity_ids))
    found = await uow.masterdata.records(uow.connection, "legal_entity", ids)
    zones: dict[str, str] = {}
    for legal_entity_id in ids:
        entity = found.get(legal_entity_id)
        name = entity.time_zone if isinstance(entity, md.LegalEntity) else ""
        if name and not is_time_zone(name):
            log.warning("unknown_time_zone", legal_entity_id=legal_entity_id, time_zone=name)
            name = ""
        zones[legal_entity_id] = name or UTC_ZONE
    return zones


async def _contract_of_line(uow: BillingUnitOfWork, contract_line_id: str) -> md.Contract | None:
    parent = await uow.connection.scalar(
        md_projection.select()
        .with_only_columns(md_projection.c.parent_id)
        .where(md_projection.c.kind == "contract_line", md_projection.c.id == contract_line_id)
    )
    if not parent:
        return None
    found = (await uow.masterdata.records(uow.connection, "contract", [parent])).get(parent)
    return found if isinstance(found, md.Contract) else None


def _work_row(entry: Any) -> dict[str, Any]:
    return {
        "time_entry_id": entry.id,
        "project_id": entry.project_id,
        "consultant_id": entry.consultant_id,
        "labor_category_id": entry.labor_category_id,
        "legal_entity_id": entry.legal_entity_id,
        "customer_id": entry.customer_id,
        "work_date": dt.date.fromisoformat(entry.work_date),
        "hours": parse_decimal(entry.hours),
        "billable": entry.billable,
        "approve_time": entry.approve_time.ToDatetime(dt.UTC) if entry.HasField("approve_time") else None,
    }


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            [Violation("page_size", "OUT_OF_RANGE", "page_size must not be negative")],
        )
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
