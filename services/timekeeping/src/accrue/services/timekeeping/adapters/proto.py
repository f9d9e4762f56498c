"""Time entries to and from the contract's messages, and the events they publish."""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import Message

from accrue.eventbus import Event
from accrue.events.v1 import time_events_pb2 as ev
from accrue.money import format_decimal, format_money
from accrue.services.timekeeping.domain.model import Status, TimeEntry
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

_STATUS = {status: tk.TimeEntryStatus.Value(f"TIME_ENTRY_STATUS_{status}") for status in Status}


def to_proto(entry: TimeEntry) -> tk.TimeEntry:
    """The entry as the API and events show it."""
    sub = entry.submission
    msg = tk.TimeEntry(
        id=entry.id,
        consultant_id=sub.consultant_id,
        project_id=sub.project_id,
        labor_category_id=entry.labor_category_id,
        work_date=sub.work_date.isoformat(),
        hours=format_decimal(sub.hours, 2),
        billable=entry.billable,
        notes=sub.notes,
        status=_STATUS[entry.status],
        violations=[
            types_pb2.Violation(field=v.field, code=v.code, message=v.message) for v in entry.violations
        ],
        approver_id=entry.approver_id,
        invoice_id=entry.invoice_id,
        legal_entity_id=entry.legal_entity_id,
        customer_id=entry.customer_id,
        decline_reason=entry.decline_reason,
        etag=str(entry.version),
    )
    if sub.external_ref:
        msg.external_ref.system, msg.external_ref.id = sub.external_ref
    if entry.rate is not None:
        msg.indicative_rate.CopyFrom(
            types_pb2.Money(
                currency=entry.rate_currency, amount=format_money(entry.rate, entry.rate_currency)
            )
        )
    _set_time(msg, "approve_time", entry.approve_time)
    _set_time(msg, "create_time", entry.create_time)
    _set_time(msg, "update_time", entry.update_time)
    return msg


def _set_time(msg: Message, field: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(msg, field).FromDatetime(value)


_EVENTS: dict[str, type[Message]] = {
    "submitted": ev.TimeEntrySubmitted,
    "approved": ev.TimeEntryApproved,
    "declined": ev.TimeEntryDeclined,
}


def entry_event(kind: str, entry: TimeEntry) -> Event:
    """time.entry.<kind>.<project_id>: the subject carries the project for per-project order."""
    message = _EVENTS[kind](time_entry=to_proto(entry))
    return Event(f"time.entry.{kind}", entry.submission.project_id, message)
