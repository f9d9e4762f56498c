"""Event entrypoints: approved time and drafted invoices into the forecast."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.service_layer.handlers import Forecasting


def subscriptions(app: Forecasting) -> list[Subscription]:
    """The consumers this service runs."""

    async def approved(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry, event.occurred_at)

    async def drafted(uow: ForecastingUnitOfWork, event: Received[Any]) -> None:
        await app.record_invoiced(uow, event.message.invoice)

    return [
        Subscription(
            durable="forecasting-time",
            stream="TIME",
            filter_subjects=("time.entry.approved.>",),
            handlers={"time.entry.approved": Handler(tev.TimeEntryApproved, approved)},
        ),
        Subscription(
            durable="forecasting-billing",
            stream="BILLING",
            filter_subjects=("billing.invoice.drafted.>",),
            handlers={"billing.invoice.drafted": Handler(bev.InvoiceDrafted, drafted)},
        ),
    ]
