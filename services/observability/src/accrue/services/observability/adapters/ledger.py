"""Writes and reads of the work ledger."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.services.observability.adapters.tables import work_ledger
from accrue.services.observability.domain.kpis import UnbilledWork


class WorkLedger:
    """The approved-work ledger on a connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

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
        }
        stmt = insert(work_ledger).values(time_entry_id=time_entry_id, **values)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[work_ledger.c.time_entry_id], set_=values)
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

    async def unbilled(self, legal_entity_id: str = "") -> list[UnbilledWork]:
        """Approved, billable, uninvoiced work, summed per legal entity and currency."""
        t = work_ledger
        value = sa.func.sum(t.c.hours * t.c.rate)
        query = (
            sa.select(t.c.legal_entity_id, t.c.currency, sa.func.sum(t.c.hours), value)
            .where(t.c.invoice_id.is_(None), t.c.billable.is_(True), t.c.hours.is_not(None))
            .group_by(t.c.legal_entity_id, t.c.currency)
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        rows = await self._conn.execute(query)
        return [
            UnbilledWork(r[0], Decimal(r[2]), Decimal(r[3]) if r[3] is not None else None, r[1] or "")
            for r in rows
        ]
