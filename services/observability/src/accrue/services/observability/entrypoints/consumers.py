"""Event entrypoints: approved time and drafted invoices into the work ledger."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.service_layer.handlers import Observability


def subscriptions(app: Observability) -> list[Subscription]:
    """The consumers this service runs."""

    async def approved(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry)

    async def drafted(uow: ObservabilityUnitOfWork, event: Received[Any]) -> None:
        await app.record_invoiced(uow, event.message.invoice)

    return [
        Subscription(
            durable="observability-time",
            stream="TIME",
            filter_subjects=("time.entry.approved.>",),
            handlers={"time.entry.approved": Handler(tev.TimeEntryApproved, approved)},
        ),
        Subscription(
            durable="observability-billing",
            stream="BILLING",
            filter_subjects=("billing.invoice.drafted.>",),
            handlers={"billing.invoice.drafted": Handler(bev.InvoiceDrafted, drafted)},
        ),
    ]
