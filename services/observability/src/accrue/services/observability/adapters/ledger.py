"""Writes and reads of observability's own ledger (kept from events, never from other databases)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.services.observability.adapters.tables import (
    billing_exceptions,
    forecast_totals,
    forecast_versions,
    invoices,
    legal_entities,
    posted_lines,
    reconciliations,
    work_ledger,
)
from accrue.services.observability.domain.forecast import MonthTotal
from accrue.services.observability.domain.kpis import AGE_BUCKETS, UnbilledWork


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger knows of one time entry."""

    time_entry_id: str
    legal_entity_id: str | None
    project_id: str | None
    hours: Decimal | None
    rate: Decimal | None
    currency: str | None
    approve_time: dt.datetime | None
    post_time: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PostedLine:
    """A TIME line of an invoice the ERP confirmed."""

    invoice_id: str
    project_id: str
    amount: Decimal
    currency: str
    time_entry_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """An invoice as the BILLING stream last described it."""

    invoice_id: str
    legal_entity_id: str
    currency: str
    status: str
    subtotal: Decimal | None
    erp_document_id: str
    post_time: dt.datetime | None
    update_time: dt.datetime


@dataclass(frozen=True, slots=True)
class ForecastVersionTotals:
    """One published forecast version with its totals."""

    version_id: str
    previous_version_id: str
    create_time: dt.datetime
    totals: list[MonthTotal]


@dataclass(frozen=True, slots=True)
class Lag:
    """A lag over recent entries of one legal entity, in seconds."""

    entry_count: int
    median: float
    p90: float


# Statuses only move forward; an older event arriving late must not move one back.
_STATUS_RANK = {"DRAFT": 1, "APPROVED": 2, "POSTED": 3, "VOID": 4}


class WorkLedger:
    """The ledger on a connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    # --- legal entities -----------------------------------------------------------------

    async def legal_entity(self, legal_entity_id: str, time_zone: str) -> None:
        """Keep a legal entity's time zone (its newest upsert wins)."""
        stmt = insert(legal_entities).values(legal_entity_id=legal_entity_id, time_zone=time_zone)
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[legal_entities.c.legal_entity_id], set_={"time_zone": time_zone}
            )
        )

    async def time_zones(self) -> dict[str, str]:
        """Every known legal entity's time zone, by id."""
        rows = await self._conn.execute(
            sa.select(legal_entities.c.legal_entity_id, legal_entities.c.time_zone)
        )
        return {r[0]: r[1] for r in rows}

    # --- time entries -------------------------------------------------------------------

    async def approved(
        self,
        time_entry_id: str,
        legal_entity_id: str,
        project_id: str,
        hours: Decimal,
        billable: bool,
        rate: Decimal | None,
        currency: str,
        approve_time: dt.datetime | None,
        work_date: dt.date | None = None,
        submit_time: dt.datetime | None = None,
    ) -> None:
        """Record approved time (keeps an invoice mark that arrived first)."""
        values = {
            "legal_entity_id": legal_entity_id,
            "project_id": project_id,
            "hours": hours,
            "billable": billable,
            "rate": rate,
            "currency": currency,
            "approve_time": approve_time,
            "work_date": work_date,
            "submit_time": submit_time,
        }
        stmt = insert(work_ledger).values(time_entry_id=time_entry_id, **values)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[work_ledger.c.time_entry_id], set_=values)
        )

    async def reversed(self, time_entry_id: str, at: dt.datetime) -> None:
        """The entry was reversed after approval: it is no longer approved work."""
        stmt = insert(work_ledger).values(time_entry_id=time_entry_id, reverse_time=at)
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[work_ledger.c.time_entry_id], set_={"reverse_time": at}
            )
        )

    async def invoiced(self, time_entry_ids: list[str], invoice_id: str, at: dt.datetime) -> None:
        """Mark entries as on an invoice (creates the row if approval has not arrived yet)."""
        if not time_entry_ids:
            return
        stmt = insert(work_ledger).values(
            [{"time_entry_id": i, "invoice_id": invoice_id, "invoice_time": at} for i in time_entry_ids]
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[work_ledger.c.time_entry_id],
                set_={"invoice_id": stmt.excluded.invoice_id, "invoice_time": stmt.excluded.invoice_time},
            )
        )

    async def uninvoiced(self, invoice_id: str) -> None:
        """A voided invoice: its entries are unbilled again (unless already on another invoice)."""
        t = work_ledger
        await self._conn.execute(
            sa.update(t)
            .where(t.c.invoice_id == invoice_id)
            .values(invoice_id=None, invoice_time=None, post_time=None)
        )

    async def posted(self, time_entry_ids: list[str], at: dt.datetime) -> None:
        """The ERP confirmed an invoice with these entries."""
        if not time_entry_ids:
            return
        stmt = insert(work_ledger).values([{"time_entry_id": i, "post_time": at} for i in time_entry_ids])
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[work_ledger.c.time_entry_id], set_={"post_time": at})
        )

    async def entries(self, time_entry_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger rows of these entries, by id."""
        ids = list(set(time_entry_ids))
        if not ids:
            return {}
        t = work_ledger
        rows = await self._conn.execute(
            sa.select(
                t.c.time_entry_id,
                t.c.legal_entity_id,
                t.c.project_id,
                t.c.hours,
                t.c.rate,
                t.c.currency,
                t.c.approve_time,
                t.c.post_time,
            ).where(t.c.time_entry_id.in_(ids))
        )
        return {r[0]: LedgerEntry(*r) for r in rows}

    async def unbilled(
        self,
        bucket_starts: Mapping[str, Sequence[tuple[str, dt.datetime]]],
        default_starts: Sequence[tuple[str, dt.datetime]],
        legal_entity_id: str = "",
        legal_entity_ids: frozenset[str] | None = None,
    ) -> list[UnbilledWork]:
        """Approved, hourly-billed, unreversed, uninvoiced work per legal entity, currency and age bucket.

        Hourly-billed: billable and priced by timekeeping (an indicative rate). Billable time on a
        fixed-fee contract line has no rate: its milestones are billed, never its hours.

        Grouped by age bucket, so the answer stays small however much work waits; each group
        carries its earliest approval time, for the oldest age. Where the buckets begin is the
        caller's (domain.kpis.bucket_starts): per legal entity (bucket_starts, for those in a zone
        of their own) or default_starts, youngest first. Work without an approval time is youngest.
        """
        t = work_ledger
        youngest, oldest = AGE_BUCKETS[0][0], AGE_BUCKETS[-1][0]

        def bucket(starts: Sequence[tuple[str, dt.datetime]]) -> Any:
            whens: list[tuple[Any, str]] = [(t.c.approve_time.is_(None), youngest)]
            whens += [(t.c.approve_time >= since, label) for label, since in starts]
            return sa.case(*whens, else_=oldest)

        age = bucket(default_starts)
        if bucket_starts:
            age = sa.case(
                *[
                    (t.c.legal_entity_id == entity, bucket(starts))
                    for entity, starts in bucket_starts.items()
                ],
                else_=age,
            )
        query = (
            sa.select(
                t.c.legal_entity_id,
                t.c.currency,
                sa.func.min(t.c.approve_time),
                sa.func.sum(t.c.hours),
                sa.func.sum(t.c.hours * t.c.rate),
            )
            .where(
                t.c.invoice_id.is_(None),
                t.c.billable.is_(True),
                t.c.rate.is_not(None),
                t.c.hours.is_not(None),
                t.c.reverse_time.is_(None),
            )
            .group_by(t.c.legal_entity_id, t.c.currency, age)
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        if legal_entity_ids is not None:  # the caller's scope, in SQL (empty: nothing)
            query = query.where(t.c.legal_entity_id.in_(sorted(legal_entity_ids)))
        rows = await self._conn.execute(query)
        return [
            UnbilledWork(r[0], Decimal(r[3]), Decimal(r[4]) if r[4] is not None else None, r[1] or "", r[2])
            for r in rows
        ]

    async def lags(self, since: dt.datetime) -> dict[tuple[str, str], Lag]:
        """Per (legal entity, lag): approval, draft and posted lags of entries since `since`.

        approval: submitted → approved, for entries approved since; draft: approved → drafted,
        for entries drafted since; posted: approved → confirmed, for entries posted since.
        """
        t = work_ledger
        kinds = {
            "approval": (t.c.submit_time, t.c.approve_time),
            "draft": (t.c.approve_time, t.c.invoice_time),
            "posted": (t.c.approve_time, t.c.post_time),
        }
        out: dict[tuple[str, str], Lag] = {}
        for kind, (start, end) in kinds.items():
            seconds = sa.func.greatest(sa.extract("epoch", end - start), 0)
            rows = await self._conn.execute(
                sa.select(
                    t.c.legal_entity_id,
                    sa.func.count(),
                    sa.func.percentile_cont(0.5).within_group(seconds),
                    sa.func.percentile_cont(0.9).within_group(seconds),
                )
                .where(start.is_not(None), end.is_not(None), end >= since, t.c.legal_entity_id.is_not(None))
                .group_by(t.c.legal_entity_id)
            )
            for r in rows:
                out[(r[0], kind)] = Lag(int(r[1]), float(r[2]), float(r[3]))
        return out

    # --- invoices -----------------------------------------------------------------------

    async def invoice(self, record: InvoiceRecord) -> bool:
        """Upsert an invoice; False when the ledger already holds a later status (a late event)."""
        current = await self._conn.scalar(
            sa.select(invoices.c.status).where(invoices.c.invoice_id == record.invoice_id).with_for_update()
        )
        if current is not None and _STATUS_RANK.get(current, 0) > _STATUS_RANK.get(record.status, 0):
            return False
        values = {
            "legal_entity_id": record.legal_entity_id,
            "currency": record.currency,
            "status": record.status,
            "subtotal": record.subtotal,
            "erp_document_id": record.erp_document_id or None,
            "post_time": record.post_time,
            "update_time": record.update_time,
        }
        stmt = insert(invoices).values(invoice_id=record.invoice_id, **values)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[invoices.c.invoice_id], set_=values)
        )
        return True

    async def add_posted_lines(self, legal_entity_id: str, lines: Sequence[PostedLine]) -> None:
        """The TIME lines of a posted invoice (idempotent per invoice and line)."""
        if not lines:
            return
        stmt = insert(posted_lines).values(
            [
                {
                    "invoice_id": line.invoice_id,
                    "line_id": f"{line.invoice_id}:{n}",
                    "legal_entity_id": legal_entity_id,
                    "project_id": line.project_id,
                    "kind": "TIME",
                    "quantity": Decimal(0),
                    "amount": line.amount,
                    "currency": line.currency,
                    "time_entry_ids": list(line.time_entry_ids),
                }
                for n, line in enumerate(lines)
            ]
        )
        await self._conn.execute(stmt.on_conflict_do_nothing())

    async def remove_posted_lines(self, invoice_id: str) -> None:
        """A voided invoice no longer counts as posted."""
        await self._conn.execute(sa.delete(posted_lines).where(posted_lines.c.invoice_id == invoice_id))

    async def posted_lines_for(self, time_entry_ids: Iterable[str]) -> list[PostedLine]:
        """Posted TIME lines that bill any of these entries."""
        ids = list(set(time_entry_ids))
        if not ids:
            return []
        p = posted_lines
        rows = await self._conn.execute(
            sa.select(p.c.invoice_id, p.c.project_id, p.c.amount, p.c.currency, p.c.time_entry_ids).where(
                p.c.time_entry_ids.overlap(sa.cast(ids, postgresql.ARRAY(sa.Text)))
            )
        )
        return [PostedLine(r[0], r[1], Decimal(r[2]), r[3], tuple(r[4])) for r in rows]

    async def posted_entry_ids(self, time_entry_ids: Iterable[str]) -> set[str]:
        """Which of these entries are on an invoice the ERP confirmed."""
        return {i for line in await self.posted_lines_for(time_entry_ids) for i in line.time_entry_ids}

    async def posting_backlog(self) -> dict[str, int]:
        """Approved invoices not yet confirmed by the ERP, per legal entity."""
        rows = await self._conn.execute(
            sa.select(invoices.c.legal_entity_id, sa.func.count())
            .where(invoices.c.status == "APPROVED")
            .group_by(invoices.c.legal_entity_id)
        )
        return {r[0]: int(r[1]) for r in rows}

    # --- billing exceptions -------------------------------------------------------------

    async def exception(self, exception_id: str, legal_entity_id: str, kind: str, is_open: bool) -> None:
        """Record a raised (open) or resolved exception; resolved stays resolved."""
        stmt = insert(billing_exceptions).values(
            exception_id=exception_id, legal_entity_id=legal_entity_id, kind=kind, open=is_open
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[billing_exceptions.c.exception_id],
                set_={"open": sa.and_(billing_exceptions.c.open, stmt.excluded.open)},
            )
        )

    async def open_exceptions(self) -> dict[tuple[str, str], int]:
        """Open billing exceptions per (legal entity, kind)."""
        t = billing_exceptions
        rows = await self._conn.execute(
            sa.select(t.c.legal_entity_id, t.c.kind, sa.func.count())
            .where(t.c.open.is_(True))
            .group_by(t.c.legal_entity_id, t.c.kind)
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # --- forecast versions --------------------------------------------------------------

    async def forecast_version(self, version: ForecastVersionTotals) -> None:
        """Store a published version (versions are immutable: a replay changes nothing)."""
        inserted = await self._conn.scalar(
            insert(forecast_versions)
            .values(
                version_id=version.version_id,
                previous_version_id=version.previous_version_id or None,
                create_time=version.create_time,
            )
            .on_conflict_do_nothing()
            .returning(forecast_versions.c.version_id)
        )
        if inserted is None or not version.totals:
            return
        await self._conn.execute(
            insert(forecast_totals).values(
                [
                    {
                        "version_id": version.version_id,
                        "legal_entity_id": t.legal_entity_id,
                        "month": t.month,
                        "currency": t.currency,
                        "forecast_revenue": t.forecast_revenue,
                        "actual_revenue": t.actual_revenue,
                    }
                    for t in version.totals
                ]
            )
        )

    async def latest_forecast_versions(
        self,
    ) -> tuple[ForecastVersionTotals | None, ForecastVersionTotals | None]:
        """The newest version and the one it names as previous (if stored)."""
        v = forecast_versions
        latest = (
            await self._conn.execute(
                sa.select(v.c.version_id, v.c.previous_version_id, v.c.create_time)
                .order_by(v.c.create_time.desc(), v.c.version_id.desc())
                .limit(1)
            )
        ).first()
        if latest is None:
            return None, None
        newest = await self._version(latest[0], latest[1], latest[2])
        previous = None
        if latest[1]:
            row = (
                await self._conn.execute(
                    sa.select(v.c.version_id, v.c.previous_version_id, v.c.create_time).where(
                        v.c.version_id == latest[1]
                    )
                )
            ).first()
            if row is not None:
                previous = await self._version(row[0], row[1], row[2])
        return newest, previous

    async def _version(self, version_id: str, previous: str | None, at: dt.datetime) -> ForecastVersionTotals:
        t = forecast_totals
        rows = await self._conn.execute(
            sa.select(
                t.c.legal_entity_id, t.c.month, t.c.currency, t.c.forecast_revenue, t.c.actual_revenue
            ).where(t.c.version_id == version_id)
        )
        totals = [MonthTotal(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4])) for r in rows]
        return ForecastVersionTotals(version_id, previous or "", at, totals)

    # --- reconciliations ----------------------------------------------------------------

    async def reconciled(
        self,
        period_start: dt.date,
        period_end: dt.date,
        legal_entity_id: str,
        differences: int,
        at: dt.datetime,
    ) -> None:
        """Keep the latest result of a period and legal entity."""
        values = {"differences": differences, "run_time": at}
        stmt = insert(reconciliations).values(
            period_start=period_start, period_end=period_end, legal_entity_id=legal_entity_id, **values
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[
                    reconciliations.c.period_start,
                    reconciliations.c.period_end,
                    reconciliations.c.legal_entity_id,
                ],
                set_=values,
            )
        )

    async def latest_reconciliation_differences(self) -> dict[str, int]:
        """Per legal entity: the differences found by the latest run of its most recent period."""
        r = reconciliations
        ranked = sa.select(
            r.c.legal_entity_id,
            r.c.differences,
            sa.func.row_number()
            .over(partition_by=r.c.legal_entity_id, order_by=(r.c.period_end.desc(), r.c.run_time.desc()))
            .label("n"),
        ).subquery()
        rows = await self._conn.execute(
            sa.select(ranked.c.legal_entity_id, ranked.c.differences).where(ranked.c.n == 1)
        )
        return {row[0]: int(row[1]) for row in rows}
