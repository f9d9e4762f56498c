"""Event entrypoints: time, invoices and master data into the forecast's facts.

Each consumer applies a fetched batch in one transaction (the rate approved time arrives at
needs it), and every event's refresh lag is measured when its transaction commits.
"""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.mdprojection import subscription as md_subscription
from accrue.services.forecasting.adapters.inputs import PROJECTED_KINDS
from accrue.services.forecasting.adapters.tables import md_projection
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.service_layer.handlers import Forecasting

INVOICE_EVENTS = {
    "billing.invoice.drafted": (bev.InvoiceDrafted, "DRAFT"),
    "billing.invoice.approved": (bev.InvoiceApproved, "APPROVED"),
    "billing.invoice.posted": (bev.InvoicePosted, "POSTED"),
    "billing.invoice.voided": (bev.InvoiceVoided, "VOID"),
}


def _measured(app: Forecasting, sub: Subscription) -> Subscription:
    """The subscription in batches, every handler measuring its event's refresh lag."""

    def wrap(handler: Handler[Any, Any]) -> Handler[Any, Any]:
        async def apply(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
            await handler.apply(uow, event)
            app.applied(uow, sub.stream, event.occurred_at)

        return Handler(handler.message_type, apply)

    return Subscription(
        durable=sub.durable,
        stream=sub.stream,
        filter_subjects=sub.filter_subjects,
        handlers={name: wrap(h) for name, h in sub.handlers.items()},
        apply_batches=True,
        batch=256,
    )


def subscriptions(app: Forecasting) -> list[Subscription]:
    """The consumers this service runs: one per stream."""

    async def approved(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry, event.occurred_at)

    async def reversed_(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
        await app.record_reversed(uow, event.message.original)

    def invoice(status: str) -> Any:
        async def apply(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
            await app.record_invoice(uow, event.message.invoice, status)

        return apply

    time = Subscription(
        durable="forecasting-time",
        stream="TIME",
        filter_subjects=("time.entry.approved.>", "time.entry.reversed.>"),
        handlers={
            "time.entry.approved": Handler(tev.TimeEntryApproved, approved),
            "time.entry.reversed": Handler(tev.TimeEntryReversed, reversed_),
        },
    )
    billing = Subscription(
        durable="forecasting-billing",
        stream="BILLING",
        filter_subjects=tuple(f"{name}.>" for name in INVOICE_EVENTS),
        handlers={name: Handler(cls, invoice(status)) for name, (cls, status) in INVOICE_EVENTS.items()},
    )
    masterdata = md_subscription("forecasting-md", md_projection, PROJECTED_KINDS)
    return [_measured(app, s) for s in (time, billing, masterdata)]
