"""Event entrypoints: the master-data projection this service validates against, and which
invoice bills each entry."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.mdprojection import subscription
from accrue.services.timekeeping.adapters.tables import MASTERDATA_CONSUMER, md_projection
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.service_layer.handlers import Timekeeping

BILLING_CONSUMER = "timekeeping-billing"

# What validation reads: projects, consultants, assignments, contract lines and rate cards; and
# legal entities (their time zones) and calendars (working hours for the approval SLA).
PROJECTED_KINDS = ("project", "consultant", "assignment", "contract", "rate_card", "legal_entity", "calendar")


def masterdata_subscription() -> Subscription:
    """md.*.upserted for the kinds validation needs, into the local projection."""
    return subscription(MASTERDATA_CONSUMER, md_projection, PROJECTED_KINDS)


def billing_subscription(app: Timekeeping) -> Subscription:
    """billing.invoice.drafted → the entries its lines bill carry its id; billing.invoice.voided →
    they no longer do. (Posting changes nothing here: the draft already billed them.)"""

    async def drafted(uow: TimekeepingUnitOfWork, event: Received[Any]) -> None:
        invoice = event.message.invoice
        entry_ids = [entry_id for line in invoice.lines for entry_id in line.source_time_entry_ids]
        await app.record_invoiced(uow, invoice.id, entry_ids)

    async def voided(uow: TimekeepingUnitOfWork, event: Received[Any]) -> None:
        await app.record_voided(uow, event.message.invoice.id)

    return Subscription(
        durable=BILLING_CONSUMER,
        stream="BILLING",
        filter_subjects=("billing.invoice.drafted.>", "billing.invoice.voided.>"),
        handlers={
            "billing.invoice.drafted": Handler(bev.InvoiceDrafted, drafted),
            "billing.invoice.voided": Handler(bev.InvoiceVoided, voided),
        },
    )
