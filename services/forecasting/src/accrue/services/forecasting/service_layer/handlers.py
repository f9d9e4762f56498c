"""Forecasting use cases: keep approved work from events, answer the live forecast."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from accrue.money import parse_decimal
from accrue.runtime.validation import Violations
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.domain.forecast import Row, month_of, rows

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class Forecasting:
    """The forecasting application service."""

    def __init__(self, uow_factory: Callable[[], ForecastingUnitOfWork]) -> None:
        self._uow = uow_factory

    async def record_approved(
        self, uow: ForecastingUnitOfWork, entry: Any, occurred_at: dt.datetime | None
    ) -> None:
        """time.entry.approved: scheduled work becomes actual (and WIP until invoiced)."""
        hours = parse_decimal(entry.hours)
        rate = parse_decimal(entry.indicative_rate.amount) if entry.indicative_rate.amount else None
        await uow.work.approved(
            entry.id,
            {
                "project_id": entry.project_id,
                "customer_id": entry.customer_id,
                "legal_entity_id": entry.legal_entity_id,
                "month": month_of(dt.date.fromisoformat(entry.work_date)),
                "hours": hours,
                "value": hours * rate if rate is not None and entry.billable else None,
                "currency": entry.indicative_rate.currency,
                "event_time": occurred_at,
            },
        )

    async def record_invoiced(self, uow: ForecastingUnitOfWork, invoice: Any) -> None:
        """billing.invoice.drafted: the invoice's entries leave WIP."""
        ids = [i for line in invoice.lines for i in line.source_time_entry_ids]
        await uow.work.invoiced(ids, invoice.id)

    async def forecast(self, filters: Mapping[str, str]) -> tuple[list[Row], dt.datetime | None]:
        """The live forecast, per project and month."""
        v = Violations()
        for name in ("month_from", "month_to"):
            value = filters.get(name, "")
            if value and not _MONTH.match(value):
                v.add(name, "INVALID_MONTH", f"{name} must be a month as YYYY-MM, got {value!r}")
        v.raise_if_any("the forecast filter is invalid")
        async with self._uow() as uow:
            work, newest = await uow.work.select(filters)
        return rows(work), newest
