"""The billing ledger, runs, invoices and exceptions in PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.billing.v1 import resources_pb2 as bl
from accrue.money import format_decimal, format_money
from accrue.services.billing.adapters.tables import (
    billing_exceptions,
    billing_runs,
    invoice_lines,
    invoices,
    wip_entries,
)
from accrue.services.billing.domain.invoicing import DraftInvoice, WorkItem


@dataclass(frozen=True)
class UnbilledEntry:
    """An unbilled work item with the keys a run groups by."""

    item: WorkItem
    legal_entity_id: str
    customer_id: str


@dataclass(frozen=True)
class ExceptionDraft:
    """A billing exception to raise."""

    kind: str  # BillingExceptionKind without prefix
    legal_entity_id: str
    detail: str
    time_entry_ids: tuple[str, ...]
    hours: Decimal
    contract_id: str = ""
    contract_line_id: str = ""
    project_id: str = ""
    amount: Decimal | None = None
    currency: str = ""


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _ts(msg: Any, field: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(msg, field).FromDatetime(value)


class BillingRepository:
    """Billing tables on the unit of work's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    # -- unbilled work ------------------------------------------------------------------

    async def add_work(self, row: Mapping[str, Any]) -> bool:
        """Record approved time once; False when it was already there."""
        result = await self._conn.execute(
            insert(wip_entries).values(**row).on_conflict_do_nothing().returning(wip_entries.c.time_entry_id)
        )
        return result.first() is not None

    async def unbilled(self, legal_entity_id: str, start: dt.date, end: dt.date) -> list[UnbilledEntry]:
        """Billable, unbilled work in the period, locked for this run."""
        t = wip_entries
        query = sa.select(t).where(
            t.c.invoice_id.is_(None), t.c.billable.is_(True), t.c.work_date.between(start, end)
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        rows = await self._conn.execute(query.order_by(t.c.work_date, t.c.time_entry_id).with_for_update())
        return [
            UnbilledEntry(
                WorkItem(
                    r.time_entry_id,
                    r.project_id,
                    r.consultant_id,
                    r.labor_category_id,
                    r.work_date,
                    Decimal(r.hours),
                ),
                r.legal_entity_id,
                r.customer_id,
            )
            for r in rows
        ]

    async def work_in(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[Any]:
        """Every entry billing holds worked in the period, with its invoice's status if any."""
        t = wip_entries
        query = (
            sa.select(
                t.c.time_entry_id,
                t.c.project_id,
                t.c.legal_entity_id,
                t.c.hours,
                t.c.billable,
                t.c.invoice_id,
                invoices.c.status,
            )
            .select_from(t.outerjoin(invoices, invoices.c.id == t.c.invoice_id))
            .where(t.c.work_date.between(start, end))
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        return list(
            await self._conn.execute(query.order_by(t.c.project_id, t.c.work_date, t.c.time_entry_id))
        )

    # -- runs ---------------------------------------------------------------------------

    async def run_for(
        self, legal_entity_key: str, start: dt.date, end: dt.date, now: dt.datetime
    ) -> tuple[str, dt.datetime]:
        """The run for this scope and period, created on first use."""
        stmt = insert(billing_runs).values(
            id=str(uuid.uuid4()),
            legal_entity_key=legal_entity_key,
            period_start=start,
            period_end=end,
            create_time=now,
        )
        await self._conn.execute(stmt.on_conflict_do_nothing(constraint="billing_runs_scope_key"))
        row = (
            await self._conn.execute(
                sa.select(billing_runs.c.id, billing_runs.c.create_time).where(
                    billing_runs.c.legal_entity_key == legal_entity_key,
                    billing_runs.c.period_start == start,
                    billing_runs.c.period_end == end,
                )
            )
        ).one()
        return row.id, row.create_time

    async def billed_on_line(self, contract_line_id: str) -> Decimal:
        """What has been invoiced on a contract line (void invoices excluded)."""
        total = await self._conn.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(invoice_lines.c.amount), 0))
            .select_from(invoice_lines.join(invoices))
            .where(invoice_lines.c.contract_line_id == contract_line_id, invoices.c.status != "VOID")
        )
        return Decimal(total or 0)

    # -- invoices -------------------------------------------------------------------------

    async def save_draft(
        self, draft: DraftInvoice, run_id: str, start: dt.date, end: dt.date, now: dt.datetime
    ) -> str:
        """Store a draft with its lines and mark its work invoiced; returns the invoice id."""
        invoice_id = str(uuid.uuid4())
        await self._conn.execute(
            sa.insert(invoices).values(
                id=invoice_id,
                number=None,
                legal_entity_id=draft.legal_entity_id,
                customer_id=draft.customer_id,
                contract_id=draft.contract_id,
                billing_run_id=run_id,
                period_start=start,
                period_end=end,
                currency=draft.currency,
                status="DRAFT",
                subtotal=draft.subtotal,
                tax_total=draft.tax_total,
                total=draft.total,
                rounding_residual=draft.rounding_residual,
                erp_document_id="",
                post_time=None,
                create_time=now,
                update_time=now,
            )
        )
        rows = []
        for position, line in enumerate(draft.lines, start=1):
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "invoice_id": invoice_id,
                    "position": position,
                    "kind": "TIME",
                    "description": f"Professional services, {format_decimal(line.quantity, 2)} h",
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "amount": line.amount,
                    "tax_code": line.tax_code,
                    "tax_rate": line.tax_rate,
                    "tax_amount": line.tax_amount,
                    "contract_line_id": line.contract_line_id,
                    "project_id": line.project_id,
                    "labor_category_id": line.labor_category_id,
                    "rate_card_entry_id": line.rate_card_entry_id,
                    "source_time_entry_ids": [i.time_entry_id for i in line.items],
                    "milestone_id": "",
                }
            )
        await self._conn.execute(sa.insert(invoice_lines), rows)
        entry_ids = [i.time_entry_id for line in draft.lines for i in line.items]
        await self._conn.execute(
            sa.update(wip_entries)
            .where(wip_entries.c.time_entry_id.in_(entry_ids))
            .values(invoice_id=invoice_id)
        )
        return invoice_id

    async def invoices(self, ids: Sequence[str]) -> list[bl.Invoice]:
        """Invoices with their lines, in the order of ids."""
        wanted = [i for i in ids if _is_uuid(i)]
        if not wanted:
            return []
        heads = {
            r.id: r for r in await self._conn.execute(sa.select(invoices).where(invoices.c.id.in_(wanted)))
        }
        lines: dict[str, list[Any]] = {}
        for r in await self._conn.execute(
            sa.select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(wanted))
            .order_by(invoice_lines.c.position)
        ):
            lines.setdefault(r.invoice_id, []).append(r)
        return [_invoice(heads[i], lines.get(i, [])) for i in wanted if i in heads]

    async def invoice_ids(self, filters: Mapping[str, Any], after: str | None, limit: int) -> list[str]:
        """Invoice ids matching filters, newest first."""
        t = invoices
        query = sa.select(t.c.id)
        for name in ("legal_entity_id", "customer_id", "status", "billing_run_id"):
            if filters.get(name):
                if name == "billing_run_id" and not _is_uuid(filters[name]):
                    return []
                query = query.where(t.c[name] == filters[name])
        if after:
            query = query.where(t.c.id < after)
        rows = await self._conn.execute(query.order_by(t.c.id.desc()).limit(limit))
        return [r.id for r in rows]

    # -- exceptions -----------------------------------------------------------------------

    async def raise_exception(
        self, draft: ExceptionDraft, run_id: str | None, now: dt.datetime
    ) -> str | None:
        """Record an exception unless the same one is already open; returns its id if new."""
        ids = sorted(draft.time_entry_ids)
        key = f"{draft.kind}|{draft.contract_line_id or draft.project_id}|{','.join(ids)}"
        exception_id = str(uuid.uuid4())
        stmt = insert(billing_exceptions).values(
            id=exception_id,
            kind=draft.kind,
            status="OPEN",
            legal_entity_id=draft.legal_entity_id,
            contract_id=draft.contract_id,
            contract_line_id=draft.contract_line_id,
            project_id=draft.project_id,
            amount=draft.amount,
            currency=draft.currency,
            hours=draft.hours,
            detail=draft.detail,
            time_entry_ids=ids,
            billing_run_id=run_id,
            dedupe_key=key,
            create_time=now,
            resolve_time=None,
        )
        result = await self._conn.execute(
            stmt.on_conflict_do_nothing(
                index_elements=[billing_exceptions.c.dedupe_key], index_where=sa.text("status = 'OPEN'")
            ).returning(billing_exceptions.c.id)
        )
        return exception_id if result.first() is not None else None

    async def exceptions(
        self, filters: Mapping[str, Any], after: str | None, limit: int, ids: Iterable[str] | None = None
    ) -> list[bl.BillingException]:
        """Exceptions matching filters (or the given ids), newest first."""
        t = billing_exceptions
        query = sa.select(t)
        if ids is not None:
            query = query.where(t.c.id.in_(list(ids)))
        for name in ("status", "kind", "billing_run_id"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if after:
            query = query.where(t.c.id < after)
        rows = await self._conn.execute(query.order_by(t.c.id.desc()).limit(limit))
        return [_exception(r) for r in rows]


def _invoice(head: Any, lines: Sequence[Any]) -> bl.Invoice:
    msg = bl.Invoice(
        id=head.id,
        number=head.number or "",
        customer_id=head.customer_id,
        legal_entity_id=head.legal_entity_id,
        contract_id=head.contract_id,
        billing_run_id=head.billing_run_id,
        period_start=head.period_start.isoformat(),
        period_end=head.period_end.isoformat(),
        currency=head.currency,
        status=bl.InvoiceStatus.Value(f"INVOICE_STATUS_{head.status}"),
        subtotal=format_money(head.subtotal, head.currency),
        tax_total=format_money(head.tax_total, head.currency),
        total=format_money(head.total, head.currency),
        erp_document_id=head.erp_document_id,
        lines=[
            bl.InvoiceLine(
                id=r.id,
                kind=bl.InvoiceLineKind.Value(f"INVOICE_LINE_KIND_{r.kind}"),
                description=r.description,
                quantity=format_decimal(r.quantity, 2),
                unit_price=format_money(r.unit_price, head.currency),
                amount=format_money(r.amount, head.currency),
                tax_code=r.tax_code,
                tax_rate=format_decimal(r.tax_rate, 0),
                tax_amount=format_money(r.tax_amount, head.currency),
                contract_line_id=r.contract_line_id,
                project_id=r.project_id,
                labor_category_id=r.labor_category_id,
                rate_card_entry_id=r.rate_card_entry_id,
                source_time_entry_ids=list(r.source_time_entry_ids),
                milestone_id=r.milestone_id,
            )
            for r in lines
        ],
    )
    _ts(msg, "post_time", head.post_time)
    _ts(msg, "create_time", head.create_time)
    _ts(msg, "update_time", head.update_time)
    return msg


def _exception(r: Any) -> bl.BillingException:
    msg = bl.BillingException(
        id=r.id,
        kind=bl.BillingExceptionKind.Value(f"BILLING_EXCEPTION_KIND_{r.kind}"),
        status=bl.BillingExceptionStatus.Value(f"BILLING_EXCEPTION_STATUS_{r.status}"),
        contract_id=r.contract_id,
        contract_line_id=r.contract_line_id,
        project_id=r.project_id,
        amount=format_money(r.amount, r.currency) if r.amount is not None and r.currency else "",
        currency=r.currency,
        hours=format_decimal(r.hours, 2),
        detail=r.detail,
        time_entry_ids=list(r.time_entry_ids),
        billing_run_id=r.billing_run_id or "",
    )
    _ts(msg, "create_time", r.create_time)
    return msg
