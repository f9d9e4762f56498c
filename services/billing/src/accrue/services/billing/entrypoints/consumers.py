"""Event entrypoints: approved and reversed time and completed milestones into the ledger; the
master data billing prices with into the projection."""

from __future__ import annotations

from typing import Any

from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import masterdata_events_pb2 as mev
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
    """time.entry.approved → unbilled work; time.entry.reversed → a credit or a cancellation."""

    async def approved(uow: BillingUnitOfWork, event: Received[Any]) -> None:
        await app.record_approved(uow, event.message.time_entry)

    async def reversed_(uow: BillingUnitOfWork, event: Received[Any]) -> None:
        await app.record_reversed(uow, event.message.original, event.message.reversal, event.occurred_at)

    return Subscription(
        durable="billing-time",
        stream="TIME",
        filter_subjects=("time.entry.approved.>", "time.entry.reversed.>"),
        handlers={
            "time.entry.approved": Handler(tev.TimeEntryApproved, approved),
            "time.entry.reversed": Handler(tev.TimeEntryReversed, reversed_),
        },
    )


def milestone_subscription(app: Billing) -> Subscription:
    """md.milestone.completed → a billable milestone."""

    async def completed(uow: BillingUnitOfWork, event: Received[Any]) -> None:
        message = event.message
        await app.record_milestone(
            uow, message.milestone, message.contract_id, message.project_id, event.occurred_at
        )

    return Subscription(
        durable="billing-milestones",
        stream="MD",
        filter_subjects=("md.milestone.completed.>",),
        handlers={"md.milestone.completed": Handler(mev.MilestoneCompleted, completed)},
    )
