"""Event entrypoints: billing's drafts and voids move milestones between COMPLETED and INVOICED."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.services.masterdata.adapters.unit_of_work import MasterDataUnitOfWork
from accrue.services.masterdata.service_layer.handlers import MasterData

BILLING_CONSUMER = "masterdata-billing"


def billing_subscription(app: MasterData) -> Subscription:
    """billing.invoice.drafted → its milestones are INVOICED; billing.invoice.voided → COMPLETED."""

    def milestones(event: Received[Any]) -> tuple[str, list[str]]:
        invoice = event.message.invoice
        return invoice.id, [line.milestone_id for line in invoice.lines if line.milestone_id]

    async def drafted(uow: MasterDataUnitOfWork, event: Received[Any]) -> None:
        invoice_id, ids = milestones(event)
        await app.record_milestones_billed(uow, ids, invoice_id, invoiced=True)

    async def voided(uow: MasterDataUnitOfWork, event: Received[Any]) -> None:
        invoice_id, ids = milestones(event)
        await app.record_milestones_billed(uow, ids, invoice_id, invoiced=False)

    return Subscription(
        durable=BILLING_CONSUMER,
        stream="BILLING",
        filter_subjects=("billing.invoice.drafted.>", "billing.invoice.voided.>"),
        handlers={
            "billing.invoice.drafted": Handler(bev.InvoiceDrafted, drafted),
            "billing.invoice.voided": Handler(bev.InvoiceVoided, voided),
        },
    )
