"""Delegates, self-approval, reversals and escalation as pure transitions."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.runtime import FailedPrecondition, PermissionDenied
from accrue.services.timekeeping.domain.approval import Delegation, check_delegation, escalation_target
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def pending(approver: str = "boss") -> TimeEntry:
    sub = Submission(
        "dev", "p1", dt.date(2026, 11, 2), Decimal("7.75"), None, None, "api work", ("hr", "t-1")
    )
    return TimeEntry(
        "e1", sub, Status.PENDING_APPROVAL, approver_id=approver, labor_category_id="sc", rate=Decimal("150")
    )


def approved() -> TimeEntry:
    entry = pending()
    entry.approve("boss", NOW)
    return entry


def test_a_delegate_acts_for_the_approver_and_is_recorded_as_the_decider() -> None:
    entry = pending()
    assert entry.approve("deputy", NOW, acting_for={"boss"}) is True
    assert (entry.status, entry.approver_id, entry.decided_by_id) == (Status.APPROVED, "boss", "deputy")


def test_a_delegate_of_someone_else_is_denied() -> None:
    with pytest.raises(PermissionDenied) as denied:
        pending().approve("deputy", NOW, acting_for={"other-boss"})
    assert denied.value.reason == "NOT_APPROVER"


def test_nobody_decides_on_their_own_time_even_as_a_delegate() -> None:
    entry = pending()
    with pytest.raises(PermissionDenied) as denied:
        entry.decline("dev", "no", acting_for={"boss"})
    assert denied.value.reason == "SELF_APPROVAL"
    assert entry.status is Status.PENDING_APPROVAL


def test_a_reversal_is_a_linked_negative_twin_and_the_original_is_never_edited() -> None:
    entry = approved()
    entry.invoice_id = "inv-1"
    reversal = entry.reverse("boss", "wrong day", "r1", NOW)
    assert (entry.status, entry.reversed_by_id, entry.reversal_reason) == (Status.REVERSED, "r1", "wrong day")
    assert entry.submission.hours == Decimal("7.75")  # the original's content is untouched
    assert entry.invoice_id == "inv-1"
    sub = reversal.submission
    assert (sub.consultant_id, sub.project_id, sub.work_date) == ("dev", "p1", dt.date(2026, 11, 2))
    assert sub.hours == Decimal("-7.75")
    assert sub.external_ref is None
    assert (reversal.status, reversal.reverses_id, reversal.labor_category_id) == (
        Status.APPROVED,
        "e1",
        "sc",
    )
    assert (reversal.rate, reversal.decided_by_id, reversal.approve_time) == (Decimal("150"), "boss", NOW)
    assert reversal.invoice_id == ""


def test_only_approved_time_is_reversed_and_only_once() -> None:
    with pytest.raises(FailedPrecondition) as pending_one:
        pending().reverse("boss", "x", "r1", NOW)
    assert pending_one.value.reason == "NOT_APPROVED"
    entry = approved()
    reversal = entry.reverse("boss", "x", "r1", NOW)
    with pytest.raises(FailedPrecondition) as twice:
        entry.reverse("boss", "x", "r2", NOW)
    assert twice.value.reason == "ALREADY_REVERSED"
    with pytest.raises(FailedPrecondition) as of_reversal:
        reversal.reverse("boss", "x", "r3", NOW)
    assert of_reversal.value.reason == "IS_REVERSAL"


def test_only_the_approver_or_their_delegate_reverses() -> None:
    entry = approved()
    with pytest.raises(PermissionDenied):
        entry.reverse("stranger", "x", "r1", NOW)
    assert entry.status is Status.APPROVED
    assert entry.reverse("deputy", "x", "r1", NOW, acting_for={"boss"}).decided_by_id == "deputy"


def test_escalation_moves_the_entry_up_a_level_and_restarts_its_clock() -> None:
    entry = pending()
    later = NOW + dt.timedelta(days=3)
    due = later + dt.timedelta(days=2)
    assert entry.escalate("director", later, due) == "boss"
    assert (entry.approver_id, entry.escalation_level, entry.queue_time) == ("director", 1, later)
    assert entry.escalation_due_time == due
    entry.approve("director", later)
    assert (entry.queue_time, entry.escalation_due_time) == (None, None)
    with pytest.raises(FailedPrecondition):
        entry.escalate("ceo", later, due)


def test_the_next_level_skips_the_consultant_and_stops_at_the_top_or_a_cycle() -> None:
    assert escalation_target("boss", "dev", ["director", "ceo"]) == "director"
    # The approver's manager recorded the time: the level above them approves.
    assert escalation_target("boss", "director", ["director", "ceo"]) == "ceo"
    assert escalation_target("boss", "director", ["director"]) is None
    assert escalation_target("ceo", "dev", []) is None
    assert escalation_target("a", "dev", ["b", "a"]) == "b"
    assert escalation_target("a", "b", ["b", "a"]) is None


def test_a_delegation_covers_its_days_until_revoked_and_only_the_delegator_revokes() -> None:
    d = Delegation("d1", "boss", "deputy", dt.date(2026, 11, 20), dt.date(2026, 11, 30), "leave", NOW)
    assert [d.active_on(dt.date(2026, 11, day)) for day in (19, 20, 30)] == [False, True, True]
    assert not d.active_on(dt.date(2026, 12, 1))
    with pytest.raises(PermissionDenied):
        d.revoke("deputy", NOW)
    assert d.revoke("boss", NOW) is True
    assert d.revoke("boss", NOW) is False
    assert not d.active_on(dt.date(2026, 11, 25))
    assert d.revoked_by_id == "boss"


def test_a_new_delegation_reports_every_problem() -> None:
    today = dt.date(2026, 11, 25)
    assert check_delegation("boss", "deputy", dt.date(2026, 11, 1), dt.date(2026, 12, 1), today) == []
    codes = [
        v.code for v in check_delegation("boss", "boss", dt.date(2026, 12, 2), dt.date(2026, 12, 1), today)
    ]
    assert codes == ["SELF_DELEGATION", "INVALID_RANGE"]
    past = check_delegation("boss", "deputy", dt.date(2026, 11, 1), dt.date(2026, 11, 24), today)
    assert [v.code for v in past] == ["IN_THE_PAST"]


def test_a_rejected_entry_is_not_pending_for_anyone() -> None:
    entry = pending()
    entry.status, entry.approver_id = Status.REJECTED, ""
    with pytest.raises(FailedPrecondition) as refused:
        entry.approve("boss", NOW)
    assert refused.value.reason == "NOT_PENDING"
