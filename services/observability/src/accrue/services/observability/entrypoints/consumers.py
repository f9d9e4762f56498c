"""Event entrypoints: every stream's business events into observability's own ledger.

MD: legal entities (their time zones; their metric series exist from the moment the entity does).
TIME: approvals (unbilled work, approval lag) and reversals. BILLING: the invoice lifecycle
(invoice lag, ERP confirmations, posting backlog) and exceptions (ERP posting failures).
FORECAST: published versions (variance). Dead letters and consumer backlogs are read from
JetStream's own state instead (adapters/jetstream.py), so no consumer is needed for them.

Every handler is an idempotent upsert into the ledger, so a fetched batch is applied in one
transaction (apply_batches): a burst of approvals costs one commit per batch, not per event.
"""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.events.v1 import masterdata_events_pb2 as mev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.service_layer.handlers import Observability

INVOICE_EVENTS = {
    "billing.invoice.drafted": bev.InvoiceDrafted,
    "billing.invoice.approved": bev.InvoiceApproved,
    "billing.invoice.posted": bev.InvoicePosted,
    "billing.invoice.voided": bev.InvoiceVoided,
}


def subscriptions(app: Observability) -> list[Subscription]:
    """The consumers this service runs."""

    async def legal_entity(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_legal_entity(uow, event.message.legal_entity)

    async def approved(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry)

    async def reversed_(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_reversed(uow, event.message.original, event.occurred_at)

    async def invoice(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_invoice(uow, event.message.invoice, event.event_type)

    async def raised(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_exception(uow, event.message, is_open=True)

    async def resolved(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_exception(uow, event.message, is_open=False)

    async def published(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_forecast_version(uow, event.message)

    return [
        Subscription(
            durable="observability-md",
            stream="MD",
            filter_subjects=("md.legal_entity.upserted.>",),
            handlers={"md.legal_entity.upserted": Handler(mev.LegalEntityUpserted, legal_entity)},
            apply_batches=True,
        ),
        Subscription(
            durable="observability-time",
            stream="TIME",
            filter_subjects=("time.entry.approved.>", "time.entry.reversed.>"),
            handlers={
                "time.entry.approved": Handler(tev.TimeEntryApproved, approved),
                "time.entry.reversed": Handler(tev.TimeEntryReversed, reversed_),
            },
            apply_batches=True,
        ),
        Subscription(
            durable="observability-billing",
            stream="BILLING",
            filter_subjects=("billing.invoice.>", "billing.exception.>"),
            handlers={
                **{name: Handler(message, invoice) for name, message in INVOICE_EVENTS.items()},
                "billing.exception.raised": Handler(bev.BillingExceptionRaised, raised),
                "billing.exception.resolved": Handler(bev.BillingExceptionResolved, resolved),
            },
            apply_batches=True,
        ),
        Subscription(
            durable="observability-forecast",
            stream="FORECAST",
            filter_subjects=("forecast.version.published.>",),
            handlers={"forecast.version.published": Handler(fev.ForecastVersionPublished, published)},
        ),
    ]
