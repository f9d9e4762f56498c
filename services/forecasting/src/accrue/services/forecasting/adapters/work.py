"""Reads and writes of the forecast's approved-work table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.services.forecasting.adapters.tables import actual_work
from accrue.services.forecasting.domain.forecast import ActualWork


class WorkTable:
    """The approved-work table on a connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def approved(self, time_entry_id: str, values: Mapping[str, Any]) -> None:
        """Record approved work (keeps an invoice mark that arrived first)."""
        stmt = insert(actual_work).values(time_entry_id=time_entry_id, **values)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[actual_work.c.time_entry_id], set_=dict(values))
        )

    async def invoiced(self, time_entry_ids: list[str], invoice_id: str) -> None:
        """Mark work as invoiced: it leaves WIP."""
        if not time_entry_ids:
            return
        stmt = insert(actual_work).values(
            [{"time_entry_id": i, "invoice_id": invoice_id} for i in time_entry_ids]
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[actual_work.c.time_entry_id], set_={"invoice_id": stmt.excluded.invoice_id}
            )
        )

    async def select(self, filters: Mapping[str, str]) -> tuple[list[ActualWork], dt.datetime | None]:
        """Approved work matching filters, and the newest event time it includes."""
        t = actual_work
        query = sa.select(t).where(t.c.hours.is_not(None))
        for name in ("project_id", "customer_id", "legal_entity_id"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if filters.get("month_from"):
            query = query.where(t.c.month >= filters["month_from"])
        if filters.get("month_to"):
            query = query.where(t.c.month <= filters["month_to"])
        rows = (await self._conn.execute(query)).all()
        work = [
            ActualWork(
                r.project_id,
                r.customer_id or "",
                r.legal_entity_id or "",
                r.month,
                Decimal(r.hours),
                Decimal(r.value) if r.value is not None else None,
                r.currency or "",
                r.invoice_id is not None,
            )
            for r in rows
        ]
        newest = max((r.event_time for r in rows if r.event_time is not None), default=None)
        return work, newest
