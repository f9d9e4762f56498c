"""Time entries, delegations and locks as the contract's messages, and the events they publish."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal

from google.protobuf.message import Message

from accrue.eventbus import Event
from accrue.events.v1 import time_events_pb2 as ev
from accrue.money import format_decimal, format_money
from accrue.services.timekeeping.domain.approval import Delegation
from accrue.services.timekeeping.domain.locks import PeriodLock
from accrue.services.timekeeping.domain.model import Status, TimeEntry
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

_STATUS = {status: tk.TimeEntryStatus.Value(f"TIME_ENTRY_STATUS_{status}") for status in Status}


@functools.lru_cache(maxsize=1024)
def _hours(hours: Decimal) -> str:
    # Few distinct values (quarter hours): formatted once each.
    return format_decimal(hours, 2)


@functools.lru_cache(maxsize=1024)
def _money(amount: Decimal, currency: str) -> types_pb2.Money:
    return types_pb2.Money(currency=currency, amount=format_money(amount, currency))


def to_proto(entry: TimeEntry) -> tk.TimeEntry:
    """The entry as the API and events show it."""
    sub = entry.submission
    msg = tk.TimeEntry(
        id=entry.id,
        consultant_id=sub.consultant_id,
        project_id=sub.project_id,
        labor_category_id=entry.labor_category_id,
        work_date=sub.work_date.isoformat(),
        hours=_hours(sub.hours),
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
        reverses_id=entry.reverses_id,
        reversed_by_id=entry.reversed_by_id,
        replaces_id=entry.replaces_id,
        escalation_level=entry.escalation_level,
        likely_duplicate_of_id=entry.likely_duplicate_of_id,
        decided_by_id=entry.decided_by_id,
        reversal_reason=entry.reversal_reason,
        etag=str(entry.version),
    )
    if sub.external_ref:
        msg.external_ref.system, msg.external_ref.id = sub.external_ref
    if entry.rate is not None:
        msg.indicative_rate.CopyFrom(_money(entry.rate, entry.rate_currency))
    _set_time(msg, "approve_time", entry.approve_time)
    _set_time(msg, "queue_time", entry.queue_time)
    _set_time(msg, "create_time", entry.create_time)
    _set_time(msg, "update_time", entry.update_time)
    return msg


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _set_time(msg: Message, field: str, value: dt.datetime | None) -> None:
    # Timestamp.FromDatetime goes through time tuples; a batch of a thousand entries sets four
    # of these each, so the arithmetic is done directly (aware datetimes only, as stored).
    if value is not None:
        delta = value - _EPOCH
        stamp = getattr(msg, field)
        stamp.seconds = delta.days * 86400 + delta.seconds
        stamp.nanos = delta.microseconds * 1000


_EVENTS: dict[str, type[Message]] = {
    "submitted": ev.TimeEntrySubmitted,
    "approved": ev.TimeEntryApproved,
    "declined": ev.TimeEntryDeclined,
}


def entry_event(
    kind: str, entry: TimeEntry, wire: tk.TimeEntry | None = None, *, occurred_at: dt.datetime
) -> Event:
    """time.entry.<kind>.<project_id>: the subject carries the project for per-project order.

    wire is the entry already converted (to_proto(entry)), when the caller has it; occurred_at
    is the use case's instant, from its clock.
    """
    message = _EVENTS[kind](time_entry=wire if wire is not None else to_proto(entry))
    return Event(f"time.entry.{kind}", entry.submission.project_id, message, occurred_at=occurred_at)


def reversed_event(
    original: TimeEntry, reversal: TimeEntry, replacement: TimeEntry | None, *, occurred_at: dt.datetime
) -> Event:
    """time.entry.reversed.<project_id>, keyed by the original's project (the reversal's too)."""
    message = ev.TimeEntryReversed(original=to_proto(original), reversal=to_proto(reversal))
    if replacement is not None:
        message.replacement.CopyFrom(to_proto(replacement))
    return Event("time.entry.reversed", original.submission.project_id, message, occurred_at=occurred_at)


def escalated_event(entry: TimeEntry, previous_approver_id: str, *, occurred_at: dt.datetime) -> Event:
    """time.entry.escalated.<project_id>: the entry moved to the next level's queue."""
    message = ev.TimeEntryEscalated(
        time_entry=to_proto(entry),
        previous_approver_id=previous_approver_id,
        escalation_level=entry.escalation_level,
    )
    return Event("time.entry.escalated", entry.submission.project_id, message, occurred_at=occurred_at)


def lock_to_proto(lock: PeriodLock) -> tk.PeriodLock:
    """A period lock with its reopening, if any."""
    msg = tk.PeriodLock(
        id=lock.id,
        legal_entity_id=lock.legal_entity_id,
        locked_through=lock.locked_through.isoformat(),
        reason=lock.reason,
        locked_by_id=lock.locked_by_id,
        active=lock.active,
        reopened_by_id=lock.reopened_by_id,
        reopen_reason=lock.reopen_reason,
    )
    _set_time(msg, "create_time", lock.create_time)
    _set_time(msg, "reopen_time", lock.reopen_time)
    return msg


def delegation_to_proto(delegation: Delegation) -> tk.ApprovalDelegation:
    """A delegation with its revocation, if any."""
    msg = tk.ApprovalDelegation(
        id=delegation.id,
        delegator_id=delegation.delegator_id,
        delegate_id=delegation.delegate_id,
        start_date=delegation.start_date.isoformat(),
        end_date=delegation.end_date.isoformat(),
        reason=delegation.reason,
        revoked=delegation.revoked,
        revoked_by_id=delegation.revoked_by_id,
    )
    _set_time(msg, "create_time", delegation.create_time)
    _set_time(msg, "revoke_time", delegation.revoke_time)
    return msg
