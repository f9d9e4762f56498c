"""Reconciliation: do timekeeping, billing and the ERP agree about a period's approved time?

Three stages, compared entry by entry (so every difference names the entries behind it):

- approved: what timekeeping counts as approved in the period, by work date, net of reversals
  (a reversal is an entry of its own with negative hours);
- billing: every entry billing has received for the period — unbilled (WIP), billed, written
  off or cancelled — with the status of the invoice it is on;
- ERP: the entries on invoices whose posting the ERP confirmed (billing.invoice.posted).

approved ↔ billing: the same entries with the same hours. billing ↔ ERP: an entry billing holds
as POSTED has a confirmation, and a confirmed entry is POSTED in billing. Values: approved and
billing at the indicative rate (the same valuation on both sides, so a value difference is
always an entry difference); the ERP stage at the confirmed invoice lines' amounts.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from accrue.runtime.clock import UTC_ZONE, local_date


class DifferenceKind(StrEnum):
    """How two stages disagree about one entry."""

    MISSING_IN_BILLING = "MISSING_IN_BILLING"
    UNKNOWN_TO_TIMEKEEPING = "UNKNOWN_TO_TIMEKEEPING"
    HOURS_DIFFER = "HOURS_DIFFER"
    POSTED_NOT_CONFIRMED = "POSTED_NOT_CONFIRMED"
    CONFIRMED_NOT_POSTED = "CONFIRMED_NOT_POSTED"


@dataclass(frozen=True, slots=True)
class ApprovedEntry:
    """An entry as timekeeping reports it."""

    time_entry_id: str
    project_id: str
    legal_entity_id: str
    hours: Decimal
    billable: bool


@dataclass(frozen=True, slots=True)
class BilledEntry:
    """An entry as billing reports it."""

    time_entry_id: str
    project_id: str
    legal_entity_id: str
    hours: Decimal
    billable: bool
    posted: bool


@dataclass(frozen=True, slots=True)
class Difference:
    """One entry behind a difference."""

    kind: DifferenceKind
    time_entry_id: str
    project_id: str
    expected_hours: Decimal | None
    actual_hours: Decimal | None


@dataclass
class Stage:
    """Counts, hours and value (per currency) of one stage."""

    entry_count: int = 0
    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, hours: Decimal, value: Decimal | None = None, currency: str = "") -> None:
        self.entry_count += 1
        self.hours += hours
        if value is not None and currency:
            self.value[currency] += value

    def merge(self, other: Stage) -> None:
        self.entry_count += other.entry_count
        self.hours += other.hours
        for currency, amount in other.value.items():
            self.value[currency] += amount


@dataclass
class StageSet:
    """The four views every level reports."""

    approved: Stage = field(default_factory=Stage)
    billing: Stage = field(default_factory=Stage)
    billing_posted: Stage = field(default_factory=Stage)
    erp: Stage = field(default_factory=Stage)

    def merge(self, other: StageSet) -> None:
        self.approved.merge(other.approved)
        self.billing.merge(other.billing)
        self.billing_posted.merge(other.billing_posted)
        self.erp.merge(other.erp)


@dataclass
class ProjectResult:
    """One project's stages and differences."""

    project_id: str
    stages: StageSet = field(default_factory=StageSet)
    differences: list[Difference] = field(default_factory=list)


@dataclass
class LegalEntityResult:
    """One legal entity's stages, differences and projects."""

    legal_entity_id: str
    stages: StageSet = field(default_factory=StageSet)
    projects: list[ProjectResult] = field(default_factory=list)

    @property
    def difference_count(self) -> int:
        return sum(len(p.differences) for p in self.projects)


@dataclass(frozen=True, slots=True)
class Valuation:
    """The indicative rate of an entry (from time.entry.approved)."""

    rate: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class ConfirmedLine:
    """An ERP-confirmed invoice line: its amount and the entries it bills."""

    amount: Decimal
    currency: str
    time_entry_ids: tuple[str, ...]


def reconcile(
    approved: Iterable[ApprovedEntry],
    billed: Iterable[BilledEntry],
    confirmed: Iterable[ConfirmedLine],
    valuations: Mapping[str, Valuation],
) -> list[LegalEntityResult]:
    """Compare the stages per legal entity and project."""
    approved_by = {e.time_entry_id: e for e in approved}
    billed_by = {e.time_entry_id: e for e in billed}
    lines = list(confirmed)
    confirmed_ids = {i for line in lines for i in line.time_entry_ids}
    projects: dict[tuple[str, str], ProjectResult] = {}

    def project(legal_entity_id: str, project_id: str) -> ProjectResult:
        return projects.setdefault((legal_entity_id, project_id), ProjectResult(project_id))

    def value(entry_id: str, hours: Decimal, billable: bool) -> tuple[Decimal | None, str]:
        found = valuations.get(entry_id)
        if found is None or not billable:
            return None, ""
        return hours * found.rate, found.currency

    for a in approved_by.values():
        p = project(a.legal_entity_id, a.project_id)
        p.stages.approved.add(a.hours, *value(a.time_entry_id, a.hours, a.billable))
        b = billed_by.get(a.time_entry_id)
        if b is None:
            p.differences.append(
                Difference(DifferenceKind.MISSING_IN_BILLING, a.time_entry_id, a.project_id, a.hours, None)
            )
        elif b.hours != a.hours:
            p.differences.append(
                Difference(DifferenceKind.HOURS_DIFFER, a.time_entry_id, a.project_id, a.hours, b.hours)
            )
    for b in billed_by.values():
        p = project(b.legal_entity_id, b.project_id)
        p.stages.billing.add(b.hours, *value(b.time_entry_id, b.hours, b.billable))
        if b.time_entry_id not in approved_by:
            p.differences.append(
                Difference(
                    DifferenceKind.UNKNOWN_TO_TIMEKEEPING, b.time_entry_id, b.project_id, None, b.hours
                )
            )
        if b.posted:
            p.stages.billing_posted.add(b.hours, *value(b.time_entry_id, b.hours, b.billable))
            if b.time_entry_id not in confirmed_ids:
                p.differences.append(
                    Difference(
                        DifferenceKind.POSTED_NOT_CONFIRMED, b.time_entry_id, b.project_id, b.hours, None
                    )
                )
        elif b.time_entry_id in confirmed_ids:
            p.differences.append(
                Difference(DifferenceKind.CONFIRMED_NOT_POSTED, b.time_entry_id, b.project_id, None, b.hours)
            )
        if b.time_entry_id in confirmed_ids:
            p.stages.erp.entry_count += 1
            p.stages.erp.hours += b.hours
    # A confirmed line's amount counts once, in the project of the first of its entries we know.
    for line in lines:
        known = [billed_by.get(i) or approved_by.get(i) for i in line.time_entry_ids]
        first = next((k for k in known if k is not None), None)
        if first is not None:
            project(first.legal_entity_id, first.project_id).stages.erp.value[line.currency] += line.amount

    results: dict[str, LegalEntityResult] = {}
    for (legal_entity_id, _), p in sorted(projects.items()):
        p.differences.sort(key=lambda d: (d.kind, d.time_entry_id))
        entity = results.setdefault(legal_entity_id, LegalEntityResult(legal_entity_id))
        entity.projects.append(p)
        entity.stages.merge(p.stages)
    return list(results.values())


# -- which periods the schedule reconciles ------------------------------------------------------


def recent_months(today: dt.date, count: int) -> list[tuple[dt.date, dt.date]]:
    """The last `count` calendar months, the one today is in included, oldest first."""
    periods = []
    first = today.replace(day=1)
    for _ in range(count):
        next_first = (first + dt.timedelta(days=32)).replace(day=1)
        periods.append((first, next_first - dt.timedelta(days=1)))
        first = (first - dt.timedelta(days=1)).replace(day=1)
    return list(reversed(periods))


def periods_due(now: dt.datetime, zone_names: Iterable[str], count: int) -> list[tuple[dt.date, dt.date]]:
    """The recent months (`recent_months`) of every legal entity's zone at `now`, and UTC's (for
    entities whose zone is not known yet), oldest first: near a month's end some entities are
    already in the next month, or still in the last one, and each must have its own reconciled."""
    days = {local_date(now, name) for name in {*zone_names, UTC_ZONE}}
    return sorted({period for day in days for period in recent_months(day, count)})
