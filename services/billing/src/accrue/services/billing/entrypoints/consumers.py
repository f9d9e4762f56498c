"""Event entrypoints: approved time into the ledger; the master data billing prices with."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import time_events_pb2 as tev
from accrue.mdprojection import subscription
from accrue.services.billing.adapters.tables import md_projection
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.service_layer.handlers import Billing

PROJECTED_KINDS = ("project", "customer", "legal_entity", "contract", "rate_card", "fx_rate", "tax_rate")


def masterdata_subscription() -> Subscription:
    """md.*.upserted for what pricing reads, into the local projection."""
    return subscription("billing-md", md_projection, PROJECTED_KINDS)


def time_subscription(app: Billing) -> Subscription:
    """time.entry.approved → unbilled work."""

    async def approved(uow: BillingUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry)

    return Subscription(
        durable="billing-time",
        stream="TIME",
        filter_subjects=("time.entry.approved.>",),
        handlers={"time.entry.approved": Handler(tev.TimeEntryApproved, approved)},
    )
