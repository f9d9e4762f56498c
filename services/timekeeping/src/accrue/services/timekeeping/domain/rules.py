"""What makes a time entry valid, and who approves it. Every rule, with its reason code.

`evaluate` checks a submission against the master-data facts and reports every violation
together (never just the first). A valid entry comes back with what validation resolved:
the labor category (default: the assignment's), billability, the indicative rate, the
approver, and an earlier identical entry if there is one (a flag, not a violation).
docs/timekeeping.md lists every reason code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from accrue.pricing import resolve_rate
from accrue.runtime import Violation
from accrue.services.timekeeping.domain.masterdata import (
    AssignmentFacts,
    ConsultantFacts,
    PricingFacts,
    ProjectFacts,
)
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

QUARTER_HOUR = Decimal("0.25")
MAX_HOURS_PER_DAY = Decimal(24)
PRICED_MODELS = ("TIME_AND_MATERIALS", "CAPPED")


@dataclass(slots=True)
class Facts:
    """Everything a rule may look at, gathered before evaluation (rules only read it).

    Not frozen: a frozen dataclass sets every field through object.__setattr__, which is a
    measurable share of validating a thousand entries.
    """

    project: ProjectFacts | None
    consultant: ConsultantFacts | None
    assignments: tuple[AssignmentFacts, ...]
    pricing: PricingFacts | None
    locked_through: dt.date | None
    hours_already_on_day: Decimal
    # The consultant's today: in their time zone, else their legal entity's.
    today: dt.date
    future_allowance_days: int
    # The consultant's live entries on the day, oldest first (for the duplicate flag).
    same_day: tuple[TimeEntry, ...] = ()


@dataclass(slots=True)
class Evaluation:
    """The verdict: violations, or what validation resolved for a valid entry."""

    violations: list[Violation] = field(default_factory=list)
    labor_category_id: str = ""
    billable: bool = True
    approver_id: str = ""
    rate: Decimal | None = None
    rate_currency: str = ""
    likely_duplicate_of_id: str = ""

    def flag(self, field_name: str, code: str, message: str) -> None:
        """Record a violation."""
        self.violations.append(Violation(field_name, code, message))


def evaluate(sub: Submission, facts: Facts) -> Evaluation:
    """Apply every rule to the submission."""
    out = Evaluation(labor_category_id=sub.labor_category_id or "")
    _hours(sub, facts, out)
    _dates(sub, facts, out)
    _project(sub, facts, out)
    _consultant(sub, facts, out)
    assignment = _assignment(sub, facts, out)
    _billability_and_rate(sub, facts, assignment, out)
    _approver(sub, facts, out)
    out.likely_duplicate_of_id = likely_duplicate(sub, facts.same_day)
    return out


def _hours(sub: Submission, facts: Facts, out: Evaluation) -> None:
    if sub.hours <= 0:
        out.flag("hours", "HOURS_NOT_POSITIVE", f"hours must be more than 0, got {sub.hours}")
    elif sub.hours % QUARTER_HOUR != 0:
        out.flag("hours", "HOURS_NOT_QUARTER", f"hours must be in quarter hours (0.25), got {sub.hours}")
    total = facts.hours_already_on_day + sub.hours
    if sub.hours > 0 and total > MAX_HOURS_PER_DAY:
        out.flag(
            "hours",
            "DAILY_LIMIT_EXCEEDED",
            f"the consultant would have {total} hours on {sub.work_date}; at most {MAX_HOURS_PER_DAY} a day",
        )


def _dates(sub: Submission, facts: Facts, out: Evaluation) -> None:
    latest = facts.today + dt.timedelta(days=facts.future_allowance_days)
    if sub.work_date > latest:
        out.flag(
            "work_date",
            "DATE_IN_FUTURE",
            f"work_date {sub.work_date} is after the latest allowed day, {latest}",
        )
    if facts.locked_through is not None and sub.work_date <= facts.locked_through:
        out.flag(
            "work_date", "PERIOD_LOCKED", f"time up to {facts.locked_through} is locked for the legal entity"
        )


def _project(sub: Submission, facts: Facts, out: Evaluation) -> None:
    project = facts.project
    if project is None:
        out.flag("project_id", "PROJECT_NOT_FOUND", f"no project with id {sub.project_id!r}")
        return
    if project.deactivated:
        out.flag("project_id", "PROJECT_NOT_ACTIVE", "the project was deactivated in master data")
    elif project.status != "ACTIVE":
        out.flag(
            "project_id",
            "PROJECT_NOT_ACTIVE",
            f"the project is {project.status}; time needs an ACTIVE project",
        )
    if sub.work_date < project.start_date or (
        project.end_date is not None and sub.work_date > project.end_date
    ):
        span = f"{project.start_date} to {project.end_date or 'open end'}"
        out.flag(
            "work_date", "DATE_OUTSIDE_PROJECT", f"work_date {sub.work_date} is outside the project ({span})"
        )


def _consultant(sub: Submission, facts: Facts, out: Evaluation) -> None:
    consultant = facts.consultant
    if consultant is None:
        out.flag("consultant_id", "CONSULTANT_NOT_FOUND", f"no consultant with id {sub.consultant_id!r}")
        return
    if consultant.deactivated:
        out.flag("consultant_id", "CONSULTANT_NOT_ACTIVE", "the consultant was deactivated in master data")
    elif sub.work_date < consultant.active_from or (
        consultant.active_to is not None and sub.work_date > consultant.active_to
    ):
        out.flag(
            "consultant_id", "CONSULTANT_NOT_ACTIVE", f"the consultant is not employed on {sub.work_date}"
        )


def _assignment(sub: Submission, facts: Facts, out: Evaluation) -> AssignmentFacts | None:
    covering = [a for a in facts.assignments if a.covers(sub.work_date)]
    if not covering:
        out.flag(
            "work_date",
            "NO_ASSIGNMENT",
            f"the consultant has no assignment on the project on {sub.work_date}",
        )
        return None
    if sub.labor_category_id:
        matching = [a for a in covering if a.labor_category_id == sub.labor_category_id]
        if not matching:
            out.flag(
                "labor_category_id",
                "LABOR_CATEGORY_MISMATCH",
                f"the assignment is for labor category {covering[0].labor_category_id}, "
                f"not {sub.labor_category_id}",
            )
            return None
        return matching[0]
    out.labor_category_id = covering[0].labor_category_id
    return covering[0]


def _billability_and_rate(
    sub: Submission, facts: Facts, assignment: AssignmentFacts | None, out: Evaluation
) -> None:
    # Billable unless the consultant said otherwise, the assignment is non-billable, or the
    # contract line bills nothing.
    billable = sub.billable is not False
    if assignment is not None and not assignment.billable:
        billable = False
    if facts.pricing is not None and facts.pricing.billing_model == "NON_BILLABLE":
        billable = False
    out.billable = billable
    if not billable or assignment is None:
        return
    pricing = facts.pricing
    if pricing is None:
        out.flag("project_id", "NO_RATE", "billable time needs a contract line for the project; it has none")
        return
    if pricing.billing_model not in PRICED_MODELS:
        return  # fixed-fee time is billed through milestones, not by the hour
    entry = resolve_rate(
        pricing.rates,
        consultant_id=sub.consultant_id,
        labor_category_id=out.labor_category_id,
        day=sub.work_date,
    )
    if entry is None:
        out.flag(
            "labor_category_id",
            "NO_RATE",
            f"the rate card has no rate for labor category {out.labor_category_id} on {sub.work_date}",
        )
        return
    out.rate, out.rate_currency = entry.rate, pricing.currency


def _approver(sub: Submission, facts: Facts, out: Evaluation) -> None:
    project, consultant = facts.project, facts.consultant
    if project is None or consultant is None:
        return
    approver = resolve_approver(project, consultant)
    if not approver:
        out.flag("consultant_id", "NO_APPROVER", "the consultant manages the project and has no line manager")
        return
    out.approver_id = approver


def resolve_approver(project: ProjectFacts, consultant: ConsultantFacts) -> str:
    """The project manager approves; their own time goes to their line manager ("" for none)."""
    return consultant.manager_id if project.manager_id == consultant.id else project.manager_id


def likely_duplicate(sub: Submission, earlier: Iterable[TimeEntry]) -> str:
    """The id of an earlier live entry with the same consultant, project, day, hours and notes.

    A flag for the approver, not a rejection: two identical entries on one day are sometimes
    right (two meetings), more often a double submission from two systems. Notes compare
    without case or surrounding space; reversals and rejected, declined or reversed entries
    do not count.
    """
    notes = sub.notes.strip().casefold()
    for entry in earlier:
        other = entry.submission
        if (
            entry.status in (Status.PENDING_APPROVAL, Status.APPROVED)
            and not entry.is_reversal
            and (other.consultant_id, other.project_id, other.work_date, other.hours)
            == (sub.consultant_id, sub.project_id, sub.work_date, sub.hours)
            and other.notes.strip().casefold() == notes
        ):
            return entry.id
    return ""
