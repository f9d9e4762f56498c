"""Time-entry validation: every rule has its reason code, and all violations come back together."""

import datetime as dt
from dataclasses import replace
from decimal import Decimal

from accrue.pricing import RateEntry
from accrue.services.timekeeping.domain.masterdata import (
    AssignmentFacts,
    ConsultantFacts,
    PricingFacts,
    ProjectFacts,
)
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry
from accrue.services.timekeeping.domain.rules import Facts, evaluate

D = dt.date
PROJECT = ProjectFacts("p1", "ACTIVE", D(2026, 1, 1), D(2026, 12, 31), "boss", "le1", "cu1")
CONSULTANT = ConsultantFacts("dev", "le1", "boss", D(2020, 1, 1), None)
BOSS = ConsultantFacts("boss", "le1", "ceo", D(2020, 1, 1), None)
ASSIGNMENT = AssignmentFacts("a1", "sc", D(2026, 1, 1), None, True)
PRICING = PricingFacts(
    "TIME_AND_MATERIALS", "GBP", (RateEntry("r1", "sc", None, Decimal("150"), D(2026, 1, 1), None),)
)
FACTS = Facts(PROJECT, CONSULTANT, (ASSIGNMENT,), PRICING, None, Decimal(0), D(2026, 11, 25), 0)
SUB = Submission("dev", "p1", D(2026, 11, 2), Decimal("7.5"), None, None, "work", None)


def codes(sub: Submission = SUB, facts: Facts = FACTS) -> list[str]:
    return [v.code for v in evaluate(sub, facts).violations]


def test_a_valid_entry_resolves_role_rate_and_the_project_manager_as_approver() -> None:
    verdict = evaluate(SUB, FACTS)
    assert verdict.violations == []
    assert (verdict.labor_category_id, verdict.billable, verdict.approver_id) == ("sc", True, "boss")
    assert (verdict.rate, verdict.rate_currency) == (Decimal("150"), "GBP")


def test_the_project_managers_own_time_goes_to_their_line_manager() -> None:
    verdict = evaluate(replace(SUB, consultant_id="boss"), replace(FACTS, consultant=BOSS))
    assert verdict.approver_id == "ceo"


def test_hours_must_be_positive_quarter_hours_within_a_day() -> None:
    assert codes(replace(SUB, hours=Decimal(0))) == ["HOURS_NOT_POSITIVE"]
    assert codes(replace(SUB, hours=Decimal("7.3"))) == ["HOURS_NOT_QUARTER"]
    assert codes(facts=replace(FACTS, hours_already_on_day=Decimal("17"))) == ["DAILY_LIMIT_EXCEEDED"]
    assert codes(facts=replace(FACTS, hours_already_on_day=Decimal("16.5"))) == []


def test_project_must_exist_be_active_and_cover_the_date() -> None:
    assert "PROJECT_NOT_FOUND" in codes(facts=replace(FACTS, project=None))
    assert codes(facts=replace(FACTS, project=replace(PROJECT, status="ON_HOLD"))) == ["PROJECT_NOT_ACTIVE"]
    assert codes(replace(SUB, work_date=D(2025, 12, 31)), replace(FACTS, assignments=())) == [
        "DATE_OUTSIDE_PROJECT",
        "NO_ASSIGNMENT",
    ]


def test_consultant_must_exist_and_be_employed_on_the_day() -> None:
    assert "CONSULTANT_NOT_FOUND" in codes(facts=replace(FACTS, consultant=None))
    left = replace(CONSULTANT, active_to=D(2026, 10, 31))
    assert codes(facts=replace(FACTS, consultant=left)) == ["CONSULTANT_NOT_ACTIVE"]


def test_an_assignment_must_cover_the_day_in_the_role_worked() -> None:
    assert codes(facts=replace(FACTS, assignments=())) == ["NO_ASSIGNMENT"]
    assert codes(replace(SUB, labor_category_id="pm")) == ["LABOR_CATEGORY_MISMATCH"]


def test_billable_time_needs_a_rate_but_non_billable_time_does_not() -> None:
    no_rates = replace(FACTS, pricing=replace(PRICING, rates=()))
    assert codes(facts=no_rates) == ["NO_RATE"]
    assert codes(facts=replace(FACTS, pricing=None)) == ["NO_RATE"]
    assert codes(replace(SUB, billable=False), no_rates) == []
    unbillable_assignment = replace(no_rates, assignments=(replace(ASSIGNMENT, billable=False),))
    verdict = evaluate(SUB, unbillable_assignment)
    assert (verdict.violations, verdict.billable) == ([], False)


def test_fixed_fee_time_is_not_priced_by_the_hour() -> None:
    fixed = replace(FACTS, pricing=PricingFacts("FIXED_FEE", "GBP", ()))
    verdict = evaluate(SUB, fixed)
    assert (verdict.violations, verdict.rate) == ([], None)


def test_locked_periods_and_future_dates_are_refused() -> None:
    assert codes(facts=replace(FACTS, locked_through=D(2026, 11, 30))) == ["PERIOD_LOCKED"]
    assert codes(replace(SUB, work_date=D(2026, 11, 26))) == ["DATE_IN_FUTURE"]
    assert codes(replace(SUB, work_date=D(2026, 11, 26)), replace(FACTS, future_allowance_days=1)) == []


def test_every_violation_is_reported_together() -> None:
    bad = replace(SUB, hours=Decimal("7.3"), work_date=D(2026, 12, 24))
    facts = replace(
        FACTS, project=replace(PROJECT, status="CLOSED"), assignments=(), locked_through=D(2026, 12, 31)
    )
    assert codes(bad, facts) == [
        "HOURS_NOT_QUARTER",
        "DATE_IN_FUTURE",
        "PERIOD_LOCKED",
        "PROJECT_NOT_ACTIVE",
        "NO_ASSIGNMENT",
    ]


def test_fingerprint_ignores_how_hours_are_written() -> None:
    assert SUB.fingerprint() == replace(SUB, hours=Decimal("7.50")).fingerprint()
    assert SUB.fingerprint() != replace(SUB, notes="other").fingerprint()


def _earlier(status: Status = Status.PENDING_APPROVAL, **changes: object) -> TimeEntry:
    return TimeEntry("e0", replace(SUB, **changes), status)


def test_an_identical_live_entry_on_the_day_is_flagged_not_rejected() -> None:
    verdict = evaluate(replace(SUB, notes="  Work "), replace(FACTS, same_day=(_earlier(),)))
    assert (verdict.violations, verdict.likely_duplicate_of_id) == ([], "e0")


def test_different_hours_notes_or_a_dead_entry_is_no_duplicate() -> None:
    for earlier in (
        _earlier(hours=Decimal("7")),
        _earlier(notes="other work"),
        _earlier(project_id="p2"),
        _earlier(Status.DECLINED),
        _earlier(Status.REVERSED),
        _earlier(Status.REJECTED),
    ):
        assert evaluate(SUB, replace(FACTS, same_day=(earlier,))).likely_duplicate_of_id == ""


def test_deactivated_master_data_does_not_take_time() -> None:
    assert codes(facts=replace(FACTS, project=replace(PROJECT, deactivated=True))) == ["PROJECT_NOT_ACTIVE"]
    assert codes(facts=replace(FACTS, consultant=replace(CONSULTANT, deactivated=True))) == [
        "CONSULTANT_NOT_ACTIVE"
    ]
    assert codes(facts=replace(FACTS, assignments=(replace(ASSIGNMENT, deactivated=True),))) == [
        "NO_ASSIGNMENT"
    ]


def test_the_project_managers_own_time_with_no_line_manager_has_no_approver() -> None:
    top = replace(BOSS, manager_id="")
    verdict = evaluate(replace(SUB, consultant_id="boss"), replace(FACTS, consultant=top))
    assert [(v.field, v.code) for v in verdict.violations] == [("consultant_id", "NO_APPROVER")]
    assert verdict.approver_id == ""
