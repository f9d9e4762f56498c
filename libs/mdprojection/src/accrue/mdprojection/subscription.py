"""The durable consumer that keeps a projection current from md.*.upserted events."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message

from accrue.db import UnitOfWork
from accrue.eventbus import Handler, Received, Subscription
from accrue.events.v1 import masterdata_events_pb2 as ev
from accrue.mdprojection.store import ProjectionStore

# Event message per kind; the record is the event's only field, named like the kind.
EVENTS: dict[str, type[Message]] = {
    "legal_entity": ev.LegalEntityUpserted,
    "customer": ev.CustomerUpserted,
    "labor_category": ev.LaborCategoryUpserted,
    "consultant": ev.ConsultantUpserted,
    "project": ev.ProjectUpserted,
    "rate_card": ev.RateCardUpserted,
    "contract": ev.ContractUpserted,
    "milestone": ev.MilestoneUpserted,
    "assignment": ev.AssignmentUpserted,
    "opportunity": ev.OpportunityUpserted,
    "fx_rate": ev.FxRateUpserted,
    "tax_rate": ev.TaxRateUpserted,
    "calendar": ev.CalendarUpserted,
}


def subscription(
    durable: str,
    table: sa.Table,
    kinds: Iterable[str],
    on_change: Callable[[UnitOfWork, str, Any], Any] | None = None,
) -> Subscription:
    """A subscription that projects the given kinds into table (and calls on_change, if any)."""
    handlers: dict[str, Handler[Any, Any]] = {}
    for kind in kinds:
        # A deactivation carries the record too (deactivate_time set): store it the same way.
        for event in ("upserted", "deactivated"):
            handlers[f"md.{kind}.{event}"] = Handler(EVENTS[kind], _apply(kind, table, on_change))
    subjects = tuple(f"md.{kind}.{event}.>" for kind in kinds for event in ("upserted", "deactivated"))
    return Subscription(durable=durable, stream="MD", filter_subjects=subjects, handlers=handlers)


def _apply(
    kind: str, table: sa.Table, on_change: Callable[[UnitOfWork, str, Any], Any] | None
) -> Callable[[UnitOfWork, Received[Any]], Any]:
    async def apply(uow: UnitOfWork, event: Received[Any]) -> None:
        record = getattr(event.message, kind)
        stored = await ProjectionStore(uow.connection, table).upsert(kind, record)
        if stored and on_change is not None:
            await on_change(uow, kind, record)

    return apply
