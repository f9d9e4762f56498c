"""Approval transitions: only the resolved approver, only from pending, idempotent on repeat."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.runtime import FailedPrecondition, PermissionDenied
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def pending() -> TimeEntry:
    sub = Submission("dev", "p1", dt.date(2026, 11, 2), Decimal("8"), None, None, "", None)
    return TimeEntry("e1", sub, Status.PENDING_APPROVAL, approver_id="boss")


def test_the_approver_approves_once_and_a_repeat_changes_nothing() -> None:
    entry = pending()
    assert entry.approve("boss", NOW) is True
    assert (entry.status, entry.approve_time) == (Status.APPROVED, NOW)
    assert entry.approve("boss", NOW) is False


def test_anyone_else_is_denied() -> None:
    with pytest.raises(PermissionDenied):
        pending().approve("dev", NOW)


def test_a_declined_entry_cannot_be_approved() -> None:
    entry = pending()
    entry.decline("boss", "wrong project")
    with pytest.raises(FailedPrecondition):
        entry.approve("boss", NOW)
    assert entry.decline_reason == "wrong project"
