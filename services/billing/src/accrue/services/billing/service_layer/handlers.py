"""Billing use cases: take approved time into the ledger, run billing, read invoices."""

from __future__ import annotations

import datetime as dt
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accrue.billing.v1 import resources_pb2 as bl
from accrue.eventbus import Event
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import parse_decimal, round_money
from accrue.pricing import RateEntry, resolve_rate
from accrue.runtime import InvalidArgument, NotFound, Violation
from accrue.runtime.validation import Violations
from accrue.services.billing.adapters.repository import ExceptionDraft, UnbilledEntry
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.invoicing import DraftInvoice, PricedItem, group_lines, split_at_cap

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass
class RunResult:
    """A billing run with every draft it holds and the exceptions this call raised."""

    run_id: str
    legal_entity_id: str
    period_start: dt.date
    period_end: dt.date
    create_time: dt.datetime
    invoices: list[bl.Invoice] = field(default_factory=list)
    exceptions: list[bl.BillingException] = field(default_factory=list)


def _date(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _latest_on(rates: list[Any], day: dt.date, date_field: str) -> Any | None:
    """The rate effective on day: the latest one dated on or before it."""
    candidates = [r for r in rates if dt.date.fromisoformat(getattr(r, date_field)) <= day]
    return max(candidates, key=lambda r: getattr(r, date_field), default=None)


class Billing:
    """The billing application service."""

    def __init__(
        self,
        uow_factory: Callable[[], BillingUnitOfWork],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow_factory
        self._clock = clock

    # -- the ledger -----------------------------------------------------------------------

    async def record_approved(self, uow: BillingUnitOfWork, entry: Any) -> bool:
        """Add approved time to unbilled work (once; the entry id is the key)."""
        return await uow.billing.add_work(
            {
                "time_entry_id": entry.id,
                "project_id": entry.project_id,
                "consultant_id": entry.consultant_id,
                "labor_category_id": entry.labor_category_id,
                "legal_entity_id": entry.legal_entity_id,
                "customer_id": entry.customer_id,
                "work_date": dt.date.fromisoformat(entry.work_date),
                "hours": parse_decimal(entry.hours),
                "billable": entry.billable,
                "approve_time": entry.approve_time.ToDatetime(dt.UTC)
                if entry.HasField("approve_time")
                else None,
            }
        )

    # -- billing runs ---------------------------------------------------------------------

    async def run(self, period_start: str, period_end: str, legal_entity_id: str) -> RunResult:
        """Turn the period's unbilled work into drafts per contract; idempotent per scope.

        Running again for the same scope and period returns the same run: work already on a
        draft is never taken twice, and work approved since is added as new drafts.
        """
        v = Violations("billing_run")
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the billing run is invalid")
        assert start is not None
        assert end is not None
        now = self._clock()
        async with self._uow() as uow:
            # Two runs for the same scope serialize here; the second finds nothing left to bill.
            scope = f"{legal_entity_id}|{start}|{end}"
            await uow.connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock($1)", (zlib.crc32(scope.encode()) - 2**31,)
            )
            run_id, created = await uow.billing.run_for(legal_entity_id, start, end, now)
            work = await uow.billing.unbilled(legal_entity_id, start, end)
            drafts, problems = await self._price(uow, work, end)
            raised_by_id: dict[str, ExceptionDraft] = {}
            for problem in problems:
                exception_id = await uow.billing.raise_exception(problem, run_id, now)
                if exception_id is not None:
                    raised_by_id[exception_id] = problem
            new_invoice_ids = {
                await uow.billing.save_draft(draft, run_id, start, end, now) for draft in drafts
            }
            invoices = await uow.billing.invoices(
                await uow.billing.invoice_ids({"billing_run_id": run_id}, None, 10_000)
            )
            raised = await uow.billing.exceptions({}, None, len(raised_by_id) or 1, ids=list(raised_by_id))
            for invoice in invoices:
                if invoice.id in new_invoice_ids:
                    uow.events.add(
                        Event(
                            "billing.invoice.drafted",
                            invoice.legal_entity_id,
                            bev.InvoiceDrafted(invoice=invoice),
                        )
                    )
            for exception in raised:
                legal_entity_id = raised_by_id[exception.id].legal_entity_id
                uow.events.add(
                    Event(
                        "billing.exception.raised",
                        legal_entity_id or "none",
                        bev.BillingExceptionRaised(
                            billing_exception=exception, legal_entity_id=legal_entity_id
                        ),
                    )
                )
            await uow.commit()
        return RunResult(run_id, legal_entity_id, start, end, created, invoices, raised)

    async def _price(
        self, uow: BillingUnitOfWork, work: list[UnbilledEntry], period_end: dt.date
    ) -> tuple[list[DraftInvoice], list[ExceptionDraft]]:
        """Price the work per project's contract line; what cannot be priced becomes exceptions."""
        conn = uow.connection
        by_project: dict[str, list[UnbilledEntry]] = defaultdict(list)
        for entry in work:
            by_project[entry.item.project_id].append(entry)
        drafts: dict[str, DraftInvoice] = {}
        problems: list[ExceptionDraft] = []
        for project_id, entries in sorted(by_project.items()):
            legal_entity_id = entries[0].legal_entity_id
            hours = sum((e.item.hours for e in entries), Decimal(0))
            ids = tuple(e.item.time_entry_id for e in entries)
            found = await uow.masterdata.contract_line(conn, project_id)
            if found is None:
                problems.append(
                    ExceptionDraft(
                        "MISSING_CONTRACT",
                        legal_entity_id,
                        "approved time on a project with no contract line",
                        ids,
                        hours,
                        project_id=project_id,
                    )
                )
                continue
            line, contract = found
            model = md.BillingModel.Name(line.billing_model).removeprefix("BILLING_MODEL_")
            if model not in ("TIME_AND_MATERIALS", "CAPPED"):
                continue  # fixed-fee bills milestones; non-billable bills nothing
            cards = await uow.masterdata.records(conn, "rate_card", [line.rate_card_id])
            card = cards.get(line.rate_card_id)
            assert isinstance(card, md.RateCard)
            rates = [_rate_entry(e) for e in card.rates]
            fx = Decimal(1)
            if card.currency != contract.currency:
                fx_rate = _latest_on(
                    await uow.masterdata.fx_rates(conn, card.currency, contract.currency),
                    period_end,
                    "effective_date",
                )
                if fx_rate is None:
                    problems.append(
                        ExceptionDraft(
                            "MISSING_FX",
                            legal_entity_id,
                            f"no {card.currency}/{contract.currency} rate on or before {period_end}",
                            ids,
                            hours,
                            contract.id,
                            line.id,
                            project_id,
                            currency=contract.currency,
                        )
                    )
                    continue
                fx = parse_decimal(fx_rate.rate)
            priced: list[PricedItem] = []
            unpriced: list[UnbilledEntry] = []
            for e in entries:
                rate = resolve_rate(
                    rates,
                    consultant_id=e.item.consultant_id,
                    labor_category_id=e.item.labor_category_id,
                    day=e.item.work_date,
                )
                if rate is None:
                    unpriced.append(e)
                else:
                    priced.append(PricedItem(e.item, rate.id, rate.rate * fx))
            if unpriced:
                problems.append(
                    ExceptionDraft(
                        "MISSING_RATE",
                        legal_entity_id,
                        f"rate card {card.code} has no rate for these entries",
                        tuple(e.item.time_entry_id for e in unpriced),
                        sum((e.item.hours for e in unpriced), Decimal(0)),
                        contract.id,
                        line.id,
                        project_id,
                        currency=contract.currency,
                    )
                )
            if model == "CAPPED":
                remaining = parse_decimal(line.cap_amount) - await uow.billing.billed_on_line(line.id)
                split = split_at_cap(priced, max(remaining, Decimal(0)), contract.currency)
                priced = split.within
                if split.excess:
                    excess_amount = sum(
                        (round_money(p.item.hours * p.unit_price, contract.currency) for p in split.excess),
                        Decimal(0),
                    )
                    problems.append(
                        ExceptionDraft(
                            "CAP_EXCEEDED",
                            legal_entity_id,
                            f"work beyond the cap of {line.cap_amount} {contract.currency}",
                            tuple(p.item.time_entry_id for p in split.excess),
                            sum((p.item.hours for p in split.excess), Decimal(0)),
                            contract.id,
                            line.id,
                            project_id,
                            excess_amount,
                            contract.currency,
                        )
                    )
            if not priced:
                continue
            tax_rate = Decimal(0)
            if line.tax_code:
                found_tax = _latest_on(
                    await uow.masterdata.tax_rates(conn, line.tax_code), period_end, "effective_from"
                )
                if found_tax is None:
                    problems.append(
                        ExceptionDraft(
                            "MISSING_TAX_RATE",
                            legal_entity_id,
                            f"tax code {line.tax_code} has no rate on or before {period_end}",
                            tuple(p.item.time_entry_id for p in priced),
                            sum((p.item.hours for p in priced), Decimal(0)),
                            contract.id,
                            line.id,
                            project_id,
                            currency=contract.currency,
                        )
                    )
                    continue
                tax_rate = parse_decimal(found_tax.rate)
            draft = drafts.get(contract.id)
            if draft is None:
                draft = drafts[contract.id] = DraftInvoice(
                    contract.id, contract.customer_id, legal_entity_id, contract.currency
                )
            for draft_line in group_lines(line.id, project_id, priced):
                draft_line.price(contract.currency, line.tax_code, tax_rate)
                draft.lines.append(draft_line)
        return list(drafts.values()), problems

    async def work_summary(self, period_start: str, period_end: str, legal_entity_id: str) -> list[Any]:
        """Every entry billing holds for the period, with its invoice status (for reconciliation)."""
        v = Violations()
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the period is invalid")
        assert start is not None
        assert end is not None
        async with self._uow() as uow:
            return await uow.billing.work_in(start, end, legal_entity_id)

    # -- reads ----------------------------------------------------------------------------

    async def get_invoice(self, invoice_id: str) -> bl.Invoice:
        """One invoice with its lines, or NOT_FOUND."""
        async with self._uow() as uow:
            found = await uow.billing.invoices([invoice_id])
        if not found:
            raise NotFound(f"no invoice with id {invoice_id!r}", reason="NOT_FOUND")
        return found[0]

    async def list_invoices(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[bl.Invoice], str]:
        """A page of invoices, newest first."""
        size = _page_size(page_size)
        async with self._uow() as uow:
            ids = await uow.billing.invoice_ids(filters, page_token or None, size + 1)
            found = await uow.billing.invoices(ids[:size])
        return found, ids[size - 1] if len(ids) > size else ""

    async def list_exceptions(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[bl.BillingException], str]:
        """A page of the exception queue, newest first."""
        size = _page_size(page_size)
        async with self._uow() as uow:
            found = await uow.billing.exceptions(filters, page_token or None, size + 1)
        return found[:size], found[size - 1].id if len(found) > size else ""


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            [Violation("page_size", "OUT_OF_RANGE", "page_size must not be negative")],
        )
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _rate_entry(entry: md.RateCardEntry) -> RateEntry:
    return RateEntry(
        id=entry.id,
        labor_category_id=entry.labor_category_id,
        consultant_id=entry.consultant_id or None,
        rate=parse_decimal(entry.rate),
        effective_from=dt.date.fromisoformat(entry.effective_from),
        effective_to=_date(entry.effective_to),
    )
