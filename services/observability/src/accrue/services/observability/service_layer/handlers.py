"""Observability use cases: keep the work ledger from events, compute KPIs, export metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from accrue.money import parse_decimal
from accrue.services.observability.adapters.jetstream import Backlog, StreamState
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.domain.kpis import Figures, unbilled_figures
from accrue.telemetry import get_logger

log = get_logger(__name__)

UNBILLED_HOURS = Gauge(
    "accrue_unbilled_approved_hours", "Approved billable hours not yet on an invoice.", ["legal_entity"]
)
UNBILLED_VALUE = Gauge(
    "accrue_unbilled_approved_value",
    "Value of unbilled approved hours at the indicative rate, in the rate's currency.",
    ["legal_entity", "currency"],
)
SYNC_BACKLOG = Gauge(
    "accrue_sync_backlog_messages", "Events a durable consumer has not processed yet.", ["stream", "consumer"]
)
DEAD_LETTERS = Gauge("accrue_dead_letters_messages", "Messages in the dead-letter stream.")


@dataclass
class Kpis:
    """Everything GetKpis answers."""

    figures: Figures
    backlogs: list[Backlog]
    dead_letters: int
    computed_at: dt.datetime


class Observability:
    """The observability application service."""

    def __init__(
        self,
        uow_factory: Callable[[], ObservabilityUnitOfWork],
        streams: StreamState,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow_factory
        self._streams = streams
        self._clock = clock

    async def record_approved(self, uow: ObservabilityUnitOfWork, entry: Any) -> None:
        """time.entry.approved: the entry becomes unbilled approved work."""
        rate = parse_decimal(entry.indicative_rate.amount) if entry.indicative_rate.amount else None
        await uow.ledger.approved(
            entry.id,
            entry.legal_entity_id,
            entry.project_id,
            parse_decimal(entry.hours),
            entry.billable,
            rate,
            entry.indicative_rate.currency,
            entry.approve_time.ToDatetime(dt.UTC) if entry.HasField("approve_time") else None,
        )

    async def record_invoiced(self, uow: ObservabilityUnitOfWork, invoice: Any) -> None:
        """billing.invoice.drafted: its entries are no longer unbilled."""
        ids = [i for line in invoice.lines for i in line.source_time_entry_ids]
        at = invoice.create_time.ToDatetime(dt.UTC) if invoice.HasField("create_time") else self._clock()
        await uow.ledger.invoiced(ids, invoice.id, at)

    async def kpis(self, legal_entity_id: str = "") -> Kpis:
        """The KPIs now."""
        async with self._uow() as uow:
            work = await uow.ledger.unbilled(legal_entity_id)
        return Kpis(
            unbilled_figures(work),
            await self._streams.backlogs(),
            await self._streams.dead_letters(),
            self._clock(),
        )

    async def export_metrics(self, interval: float = 10.0) -> None:
        """Keep the Prometheus gauges current (until cancelled)."""
        while True:
            try:
                kpis = await self.kpis()
                UNBILLED_HOURS.clear()
                UNBILLED_VALUE.clear()
                for entity, figures in kpis.figures.by_legal_entity.items():
                    UNBILLED_HOURS.labels(entity).set(float(figures.hours))
                    for currency, value in figures.value.items():
                        UNBILLED_VALUE.labels(entity, currency).set(float(value))
                SYNC_BACKLOG.clear()
                for backlog in kpis.backlogs:
                    SYNC_BACKLOG.labels(backlog.stream, backlog.consumer).set(backlog.total)
                DEAD_LETTERS.set(kpis.dead_letters)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kpi_export_failed", error=repr(exc))
            await asyncio.sleep(interval)
