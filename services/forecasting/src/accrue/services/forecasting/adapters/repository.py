"""Reads and writes of the forecasting schema on one connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.services.forecasting.adapters.tables import (
    actual_work,
    forecast_versions,
    invoice_lines,
    invoices,
)
from accrue.services.forecasting.domain.forecast import ActualWork, InvoicedAmount

# Invoice states in the order they happen; VOID outranks everything (it is final).
STATUS_RANK = {"DRAFT": 1, "APPROVED": 2, "POSTED": 3, "VOID": 4}


@dataclass(frozen=True)
class InvoiceState:
    """An invoice as the forecast keeps it."""

    invoice_id: str
    status: str
    legal_entity_id: str
    customer_id: str
    month: str
    currency: str
    lines: list[tuple[str, str, str, str, Decimal]]  # (line id, project, contract line, milestone, amount)
    time_entry_ids: list[str]


@dataclass(frozen=True)
class StoredVersion:
    """A version row."""

    id: str
    name: str
    kind: str
    previous_version_id: str
    created_at: dt.datetime
    watermark: dict[str, int]
    forecast: bytes | None


class ForecastRepository:
    """The forecast's facts and versions."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._approved: dict[str, dict[str, Any]] = {}

    # --- approved work -------------------------------------------------------------------

    def approved(self, time_entry_id: str, values: Mapping[str, Any]) -> None:
        """Record approved work (keeps an invoice mark or a reversal that arrived first).

        Rows are held until `flush` (before any other write, and before commit), so a batch of
        approvals is one statement."""
        self._approved[time_entry_id] = {"time_entry_id": time_entry_id, **values}

    async def flush(self) -> None:
        """Write the approvals held so far in one upsert."""
        if not self._approved:
            return
        rows, self._approved = list(self._approved.values()), {}
        stmt = insert(actual_work)
        columns = [c for c in rows[0] if c != "time_entry_id"]
        # Parameters as a list (executemany): the statement compiles once, whatever the size.
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[actual_work.c.time_entry_id], set_={c: stmt.excluded[c] for c in columns}
            ),
            rows,
        )

    async def reversed(self, time_entry_id: str) -> None:
        """The entry was reversed: it no longer counts (a row is kept so a late approval stays out)."""
        await self.flush()
        stmt = insert(actual_work).values(time_entry_id=time_entry_id, reversed=True)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[actual_work.c.time_entry_id], set_={"reversed": True})
        )

    async def work(self, project_id: str = "") -> list[ActualWork]:
        """Approved, unreversed work (of one project, if given), summed in the database per
        project, consultant, month, billable and invoiced: the forecast needs no finer grain,
        and a read stays small however many entries a month holds."""
        t = actual_work
        invoiced = t.c.invoice_id.is_not(None).label("invoiced")
        keys: list[Any] = [t.c.project_id, t.c.consultant_id, t.c.customer_id, t.c.legal_entity_id, t.c.month]
        keys += [t.c.billable, t.c.currency, invoiced]
        query = (
            sa.select(*keys, sa.func.sum(t.c.hours).label("hours"), sa.func.sum(t.c.value).label("value"))
            .where(t.c.hours.is_not(None), t.c.reversed.is_(False))
            .group_by(*keys)
        )
        if project_id:
            query = query.where(t.c.project_id == project_id)
        rows = await self._conn.execute(query)
        return [
            ActualWork(
                r.project_id,
                r.consultant_id or "",
                r.customer_id or "",
                r.legal_entity_id or "",
                r.month,
                Decimal(r.hours),
                r.billable is not False,
                Decimal(r.value) if r.value is not None else None,
                r.currency or "",
                bool(r.invoiced),
            )
            for r in rows
        ]

    # --- invoices ------------------------------------------------------------------------

    async def invoice(self, state: InvoiceState) -> bool:
        """Store the invoice's newest state; False (and nothing written) for an older one."""
        await self.flush()
        rank = STATUS_RANK[state.status]
        stmt = insert(invoices).values(
            invoice_id=state.invoice_id,
            status=state.status,
            rank=rank,
            legal_entity_id=state.legal_entity_id,
            customer_id=state.customer_id,
            month=state.month,
            currency=state.currency,
        )
        stored = await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[invoices.c.invoice_id],
                set_={
                    c: stmt.excluded[c]
                    for c in ("status", "rank", "legal_entity_id", "customer_id", "month", "currency")
                },
                where=invoices.c.rank <= stmt.excluded.rank,
            ).returning(invoices.c.invoice_id)
        )
        if stored.first() is None:
            return False
        await self._conn.execute(
            sa.delete(invoice_lines).where(invoice_lines.c.invoice_id == state.invoice_id)
        )
        if state.lines:
            await self._conn.execute(
                insert(invoice_lines),
                [
                    {
                        "invoice_id": state.invoice_id,
                        "line_id": line_id,
                        "project_id": project,
                        "contract_line_id": contract_line,
                        "milestone_id": milestone or None,
                        "amount": amount,
                    }
                    for line_id, project, contract_line, milestone, amount in state.lines
                ],
            )
        # Work on a live invoice leaves WIP; a voided invoice's work is unbilled again.
        t = actual_work
        if state.status == "VOID":
            await self._conn.execute(
                sa.update(t).where(t.c.invoice_id == state.invoice_id).values(invoice_id=None)
            )
        elif state.time_entry_ids:
            stmt2 = insert(t).values(
                [{"time_entry_id": i, "invoice_id": state.invoice_id} for i in state.time_entry_ids]
            )
            await self._conn.execute(
                stmt2.on_conflict_do_update(
                    index_elements=[t.c.time_entry_id], set_={"invoice_id": stmt2.excluded.invoice_id}
                )
            )
        return True

    async def invoiced(self, project_id: str = "") -> list[InvoicedAmount]:
        """Every line of a live (non-void) invoice (of one project, if given)."""
        i, line = invoices, invoice_lines
        query = (
            sa.select(
                line.c.project_id,
                i.c.customer_id,
                i.c.legal_entity_id,
                line.c.contract_line_id,
                i.c.month,
                line.c.amount,
                i.c.currency,
                i.c.status,
            )
            .join(line, line.c.invoice_id == i.c.invoice_id)
            .where(i.c.status != "VOID")
        )
        if project_id:
            query = query.where(line.c.project_id == project_id)
        rows = await self._conn.execute(query)
        return [
            InvoicedAmount(
                r.project_id,
                r.customer_id,
                r.legal_entity_id,
                r.contract_line_id,
                r.month,
                Decimal(r.amount),
                r.currency,
                r.status == "POSTED",
            )
            for r in rows
        ]

    async def invoiced_milestones(self) -> set[str]:
        """Milestones on a live invoice: they count as billed or actual, no longer as due."""
        i, line = invoices, invoice_lines
        rows = await self._conn.scalars(
            sa.select(line.c.milestone_id)
            .join(i, line.c.invoice_id == i.c.invoice_id)
            .where(i.c.status != "VOID", line.c.milestone_id.is_not(None))
        )
        return set(rows)

    async def newest_event_time(self) -> dt.datetime | None:
        """When the newest approved time the forecast holds was approved (its event occurred)."""
        return await self._conn.scalar(sa.select(sa.func.max(actual_work.c.event_time)))  # type: ignore[no-any-return]

    # --- versions ------------------------------------------------------------------------

    async def add_version(self, version: StoredVersion) -> bool:
        """Insert a version; False when a scheduled one of that name exists already."""
        assert version.forecast is not None
        stmt = (
            insert(forecast_versions)
            .values(
                id=version.id,
                name=version.name,
                kind=version.kind,
                previous_version_id=version.previous_version_id or None,
                created_at=version.created_at,
                watermark=version.watermark,
                forecast=version.forecast,
            )
            .on_conflict_do_nothing()
            .returning(forecast_versions.c.id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def latest_version_id(self) -> str:
        """The newest version's id, or ""."""
        v = forecast_versions
        found = await self._conn.scalar(sa.select(v.c.id).order_by(v.c.seq.desc()).limit(1))
        return found or ""

    async def scheduled_exists(self, name: str) -> bool:
        """True when the scheduled version of that name was taken."""
        v = forecast_versions
        found = await self._conn.scalar(sa.select(v.c.id).where(v.c.kind == "SCHEDULED", v.c.name == name))
        return found is not None

    async def version(self, version_id: str) -> StoredVersion | None:
        """One version with its forecast."""
        v = forecast_versions
        row = (await self._conn.execute(sa.select(v).where(v.c.id == version_id))).first()
        return _version(row, with_forecast=True) if row is not None else None

    async def versions(self, limit: int, before_seq: int | None) -> list[tuple[int, StoredVersion]]:
        """Newest first, without their forecast."""
        v = forecast_versions
        query = sa.select(*(c for c in v.c if c.name != "forecast")).order_by(v.c.seq.desc()).limit(limit)
        if before_seq is not None:
            query = query.where(v.c.seq < before_seq)
        rows = (await self._conn.execute(query)).all()
        return [(int(r.seq), _version(r, with_forecast=False)) for r in rows]


def _version(row: Any, *, with_forecast: bool) -> StoredVersion:
    return StoredVersion(
        row.id,
        row.name,
        row.kind,
        row.previous_version_id or "",
        row.created_at,
        {k: int(x) for k, x in row.watermark.items()},
        bytes(row.forecast) if with_forecast else None,
    )
