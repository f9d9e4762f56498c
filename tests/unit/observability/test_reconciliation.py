"""Reconciliation compares the stages entry by entry and names the entries behind each difference."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.services.observability.domain.reconciliation import (
    ApprovedEntry,
    BilledEntry,
    ConfirmedLine,
    DifferenceKind,
    Valuation,
    periods_due,
    recent_months,
    reconcile,
)

RATE = {f"e{i}": Valuation(Decimal("150"), "GBP") for i in range(1, 9)}


def a(entry: str, hours: str, project: str = "p1", billable: bool = True) -> ApprovedEntry:
    return ApprovedEntry(entry, project, "uk", Decimal(hours), billable)


def b(entry: str, hours: str, posted: bool = False, project: str = "p1") -> BilledEntry:
    return BilledEntry(entry, project, "uk", Decimal(hours), True, posted)


def test_agreeing_stages_have_no_differences_and_equal_figures() -> None:
    (uk,) = reconcile(
        [a("e1", "8"), a("e2", "4")],
        [b("e1", "8", posted=True), b("e2", "4")],
        [ConfirmedLine(Decimal("1200.00"), "GBP", ("e1",))],
        RATE,
    )
    assert uk.difference_count == 0
    s = uk.stages
    assert (s.approved.entry_count, s.approved.hours, dict(s.approved.value)) == (
        2,
        Decimal(12),
        {"GBP": Decimal(1800)},
    )
    assert (s.billing.entry_count, s.billing.hours) == (2, Decimal(12))
    assert (s.billing_posted.entry_count, s.billing_posted.hours) == (1, Decimal(8))
    assert (s.erp.entry_count, s.erp.hours, dict(s.erp.value)) == (1, Decimal(8), {"GBP": Decimal("1200.00")})


def test_every_kind_of_difference_names_its_entry_and_project() -> None:
    (uk,) = reconcile(
        [a("e1", "8"), a("e2", "4"), a("e3", "2", project="p2")],
        [
            b("e2", "3"),  # hours differ
            b("e3", "2", posted=True, project="p2"),  # billing says posted, ERP never confirmed
            b("e4", "1"),  # billing holds what timekeeping does not count
            b("e5", "6"),  # ERP confirmed, billing does not hold it as posted
        ],
        [ConfirmedLine(Decimal("900.00"), "GBP", ("e5",))],
        RATE,
    )
    found = {
        (d.kind, d.time_entry_id, d.project_id, d.expected_hours, d.actual_hours)
        for p in uk.projects
        for d in p.differences
    }
    assert found == {
        (DifferenceKind.MISSING_IN_BILLING, "e1", "p1", Decimal(8), None),
        (DifferenceKind.HOURS_DIFFER, "e2", "p1", Decimal(4), Decimal(3)),
        (DifferenceKind.UNKNOWN_TO_TIMEKEEPING, "e4", "p1", None, Decimal(1)),
        (DifferenceKind.UNKNOWN_TO_TIMEKEEPING, "e5", "p1", None, Decimal(6)),
        (DifferenceKind.CONFIRMED_NOT_POSTED, "e5", "p1", None, Decimal(6)),
        (DifferenceKind.POSTED_NOT_CONFIRMED, "e3", "p2", Decimal(2), None),
    }
    assert uk.difference_count == 6
    assert [p.project_id for p in uk.projects] == ["p1", "p2"]


def test_non_billable_time_counts_hours_but_no_value() -> None:
    (uk,) = reconcile([a("e1", "3", billable=False)], [], [], RATE)
    assert uk.stages.approved.hours == Decimal(3)
    assert dict(uk.stages.approved.value) == {}


def test_the_schedule_reconciles_the_current_and_previous_calendar_months() -> None:
    assert recent_months(dt.date(2026, 3, 15), 2) == [
        (dt.date(2026, 2, 1), dt.date(2026, 2, 28)),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 31)),
    ]
    assert recent_months(dt.date(2026, 1, 1), 2)[0] == (dt.date(2025, 12, 1), dt.date(2025, 12, 31))


@pytest.mark.dates
def test_near_a_month_end_each_legal_entitys_own_months_are_reconciled() -> None:
    # 08:00 on 1 January 2027 in Brisbane, 15:30 on 31 December 2026 in Los Angeles.
    year_end = dt.datetime(2026, 12, 31, 22, 0, tzinfo=dt.UTC)
    nov, dec, jan = (
        (dt.date(2026, 11, 1), dt.date(2026, 11, 30)),
        (dt.date(2026, 12, 1), dt.date(2026, 12, 31)),
        (dt.date(2027, 1, 1), dt.date(2027, 1, 31)),
    )
    # Brisbane is in January already (and UTC, for entities not known yet, still in December).
    assert periods_due(year_end, ["Australia/Brisbane"], 2) == [nov, dec, jan]
    assert periods_due(year_end, ["America/Los_Angeles", "UTC"], 2) == [nov, dec]
    # 23:45 on 31 January in Los Angeles while UTC is in February: January stays reconciled.
    la_month_end = dt.datetime(2027, 2, 1, 7, 45, tzinfo=dt.UTC)
    assert periods_due(la_month_end, ["America/Los_Angeles"], 1) == [
        jan,
        (dt.date(2027, 2, 1), dt.date(2027, 2, 28)),
    ]
