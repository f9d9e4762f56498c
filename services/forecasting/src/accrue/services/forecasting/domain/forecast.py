"""The live forecast: every figure per project (or opportunity) and month, and how it is computed.

The formulas are documented in docs/forecasting.md; this module is their only implementation.
Everything here is exact Decimal arithmetic on plain inputs; rounding to the currency's minor
unit happens once, when a figure is presented (`present`), except for the pipeline spread,
which is rounded per month so that the months add up to the weighted amount exactly.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

from accrue.money import round_money
from accrue.pricing import RateEntry, resolve_rate
from accrue.runtime.clock import local_date
from accrue.services.forecasting.domain.calendar import (
    WorkCalendar,
    add_months,
    days,
    earliest_local_date,
    month_end,
    month_of,
)

ZERO = Decimal(0)
HUNDRED = Decimal(100)
# Hours per day = weekly capacity / 5, as the issue defines it, whatever the calendar's week.
DAYS_PER_WEEK = Decimal(5)
# A consultant without a weekly capacity in master data.
DEFAULT_WEEKLY_CAPACITY = Decimal(40)
# Opportunity stages that take an opportunity out of the pipeline: won work is scheduled from
# its project's assignments, lost work is gone.
CLOSED_STAGES = frozenset({"WON", "LOST", "CLOSED_WON", "CLOSED_LOST"})


class Model(StrEnum):
    """How a project's contract line bills (master data's BillingModel without its prefix)."""

    TIME_AND_MATERIALS = "TIME_AND_MATERIALS"
    FIXED_FEE = "FIXED_FEE"
    CAPPED = "CAPPED"
    NON_BILLABLE = "NON_BILLABLE"
    NONE = ""  # no contract line (yet): hours count, no money


# Models whose time is worth money (WIP and scheduled value).
TIME_BILLED = frozenset({Model.TIME_AND_MATERIALS, Model.CAPPED})


@dataclass(frozen=True)
class ProjectTerms:
    """A project with what its contract line says about money."""

    id: str
    customer_id: str
    legal_entity_id: str
    currency: str
    schedulable: bool  # PLANNED or ACTIVE and not deactivated
    start: dt.date | None
    end: dt.date | None
    budget_hours: Decimal | None = None
    model: Model = Model.NONE
    contract_line_id: str = ""
    cap_amount: Decimal | None = None
    rate_currency: str = ""
    rates: tuple[RateEntry, ...] = ()


@dataclass(frozen=True)
class Staffing:
    """An assignment: a consultant on a project for a share of their week."""

    project_id: str
    consultant_id: str
    labor_category_id: str
    start: dt.date
    end: dt.date | None
    allocation_percent: Decimal
    billable: bool = True


@dataclass(frozen=True)
class Person:
    """A consultant as capacity sees them."""

    id: str
    legal_entity_id: str
    weekly_capacity: Decimal
    active_from: dt.date | None
    active_to: dt.date | None


@dataclass(frozen=True)
class Milestone:
    """A FIXED_FEE milestone."""

    id: str
    project_id: str
    amount: Decimal
    due_date: dt.date
    invoiced: bool


@dataclass(frozen=True)
class Opportunity:
    """A CRM opportunity."""

    id: str
    customer_id: str
    legal_entity_id: str
    amount: Decimal
    currency: str
    probability: Decimal  # 0..1
    stage: str
    expected_start: dt.date
    duration_months: int


@dataclass(frozen=True)
class ActualWork:
    """An approved (not reversed) time entry as the forecast sees it."""

    project_id: str
    consultant_id: str
    customer_id: str
    legal_entity_id: str
    month: str
    hours: Decimal
    billable: bool
    value: Decimal | None  # hours x indicative rate, in currency
    currency: str
    invoiced: bool


@dataclass(frozen=True)
class InvoicedAmount:
    """One invoice line's amount (before tax) on a live (non-void) invoice."""

    project_id: str
    customer_id: str
    legal_entity_id: str
    contract_line_id: str
    month: str
    amount: Decimal
    currency: str
    posted: bool


@dataclass
class FxTable:
    """FX rates from master data: the latest base→quote rate on or before a day; never inverted
    or chained (as billing and master data's convert)."""

    rates: dict[tuple[str, str], list[tuple[dt.date, Decimal]]] = field(default_factory=dict)

    def add(self, base: str, quote: str, effective: dt.date, rate: Decimal) -> None:
        """Add a rate."""
        self.rates.setdefault((base, quote), []).append((effective, rate))

    def rate(self, base: str, quote: str, on: dt.date) -> Decimal | None:
        """The rate converting base into quote on a day, 1 for the same currency, or None."""
        if base == quote:
            return Decimal(1)
        best: tuple[dt.date, Decimal] | None = None
        for effective, rate in self.rates.get((base, quote), ()):
            if effective <= on and (best is None or effective > best[0]):
                best = (effective, rate)
        return best[1] if best is not None else None


@dataclass
class Figures:
    """A row's money figures in one currency, exact."""

    actual_revenue: Decimal = ZERO
    billed: Decimal = ZERO
    wip: Decimal = ZERO
    scheduled: Decimal = ZERO
    milestones: Decimal = ZERO
    weighted_pipeline: Decimal = ZERO

    @property
    def forecast_revenue(self) -> Decimal:
        """Everything expected for the month."""
        return (
            self.actual_revenue
            + self.billed
            + self.wip
            + self.scheduled
            + self.milestones
            + self.weighted_pipeline
        )

    def times(self, fx: Decimal) -> Figures:
        """The figures converted at fx."""
        return Figures(*(getattr(self, f) * fx for f in _FIGURES))

    def add(self, other: Figures) -> None:
        """Add other's figures to these."""
        for name in _FIGURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def rounded(self, currency: str) -> Figures:
        """Each figure rounded to the currency's minor unit: the one presentation step."""
        return Figures(*(round_money(getattr(self, f), currency) for f in _FIGURES))


_FIGURES = ("actual_revenue", "billed", "wip", "scheduled", "milestones", "weighted_pipeline")


@dataclass
class Row:
    """One project's (or opportunity's) month."""

    project_id: str
    opportunity_id: str
    customer_id: str
    legal_entity_id: str
    month: str
    currency: str
    approved_hours: Decimal = ZERO
    scheduled_hours: Decimal = ZERO
    amounts: Figures = field(default_factory=Figures)
    base_currency: str = ""
    base_fx: Decimal | None = None

    @property
    def base(self) -> Figures | None:
        """The figures in the legal entity's base currency, or None without an FX rate."""
        return self.amounts.times(self.base_fx) if self.base_fx is not None else None


class Scope(StrEnum):
    """What a total adds up."""

    CUSTOMER = "CUSTOMER"
    LEGAL_ENTITY = "LEGAL_ENTITY"
    FIRM = "FIRM"


@dataclass
class Total:
    """A roll-up for one month in one currency."""

    scope: Scope
    id: str
    month: str
    currency: str
    approved_hours: Decimal = ZERO
    scheduled_hours: Decimal = ZERO
    amounts: Figures = field(default_factory=Figures)


@dataclass
class ProjectSummary:
    """A project's budget and estimate at completion over every month."""

    project_id: str
    currency: str
    budget_hours: Decimal | None
    approved_hours: Decimal = ZERO
    scheduled_hours: Decimal = ZERO
    eac_revenue: Decimal = ZERO

    @property
    def remaining_budget_hours(self) -> Decimal | None:
        """Budget less approved hours."""
        return None if self.budget_hours is None else self.budget_hours - self.approved_hours

    @property
    def eac_hours(self) -> Decimal:
        """Estimate at completion: approved plus still scheduled."""
        return self.approved_hours + self.scheduled_hours

    @property
    def budget_variance_hours(self) -> Decimal | None:
        """Budget less the estimate at completion; negative is an overrun."""
        return None if self.budget_hours is None else self.budget_hours - self.eac_hours


@dataclass(frozen=True)
class Filters:
    """Which rows a caller wants; empty means any.

    legal_entity_ids is the caller's legal-entity scope (None: every entity), not a choice: the
    rows, and so every roll-up made of them, hold only those entities' projects and pipeline.
    """

    project_id: str = ""
    customer_id: str = ""
    legal_entity_id: str = ""
    month_from: str = ""
    month_to: str = ""
    legal_entity_ids: frozenset[str] | None = None

    def in_scope(self, legal_entity_id: str) -> bool:
        return self.legal_entity_ids is None or legal_entity_id in self.legal_entity_ids

    def keeps(self, row: Row) -> bool:
        """True when the row passes every filter."""
        return (
            (not self.project_id or row.project_id == self.project_id)
            and (not self.customer_id or row.customer_id == self.customer_id)
            and (not self.legal_entity_id or row.legal_entity_id == self.legal_entity_id)
            and self.in_scope(row.legal_entity_id)
            and (not self.month_from or row.month >= self.month_from)
            and (not self.month_to or row.month <= self.month_to)
        )


@dataclass
class Inputs:
    """Everything the forecast is computed from.

    `now` is the instant the forecast is computed at. "Today" is a business date, so it is each
    legal entity's own: its local date at `now` in its time zone (`time_zones`, IANA names by
    legal entity; one without a zone is on UTC). A project's scheduled time starts on its legal
    entity's today and its horizon counts from that day's month.
    """

    now: dt.datetime
    horizon_months: int = 12
    reporting_currency: str = "EUR"
    projects: Mapping[str, ProjectTerms] = field(default_factory=dict)
    staffing: Sequence[Staffing] = ()
    people: Mapping[str, Person] = field(default_factory=dict)
    calendars: Mapping[str, WorkCalendar] = field(default_factory=dict)  # by legal entity
    milestones: Sequence[Milestone] = ()
    opportunities: Sequence[Opportunity] = ()
    work: Sequence[ActualWork] = ()
    invoiced: Sequence[InvoicedAmount] = ()
    fx: FxTable = field(default_factory=FxTable)
    base_currencies: Mapping[str, str] = field(default_factory=dict)  # by legal entity
    time_zones: Mapping[str, str] = field(default_factory=dict)  # by legal entity

    def as_of(self, legal_entity_id: str) -> dt.date:
        """A legal entity's as-of day: its local date at `now`."""
        return local_date(self.now, self.time_zones.get(legal_entity_id, ""))

    def earliest_as_of(self) -> dt.date:
        """The earliest as-of day of any legal entity: where, somewhere, scheduled time starts."""
        return earliest_local_date(self.now, self.time_zones.values())

    def horizon_end(self, legal_entity_id: str) -> dt.date:
        """The last day a legal entity's scheduled time is projected to."""
        return month_end(add_months(month_of(self.as_of(legal_entity_id)), self.horizon_months - 1))

    def calendar_for(self, legal_entity_id: str) -> WorkCalendar:
        """The legal entity's calendar, Monday to Friday without holidays when it has none."""
        return self.calendars.get(legal_entity_id) or WorkCalendar()


@dataclass
class Forecast:
    """The computed forecast."""

    rows: list[Row]
    totals: list[Total]
    projects: list[ProjectSummary]
    missing_fx: list[str]


@dataclass(frozen=True)
class ScheduledMonth:
    """One assignment's scheduled time in one month: hours, and their value in the rate card
    currency (None when the time is not billable or no day had a rate)."""

    month: str
    hours: Decimal
    value: Decimal | None


def scheduled_months(inp: Inputs, s: Staffing) -> list[ScheduledMonth]:
    """The assignment's working days from the as-of day of the project's legal entity (included)
    to the earliest of its end, the project's end, the consultant's active_to and the horizon,
    allocation x weekly capacity / 5 hours each, each valued at the rate effective that day;
    summed per month."""
    project = inp.projects.get(s.project_id)
    if project is None or not project.schedulable:
        return []
    person = inp.people.get(s.consultant_id)
    capacity = person.weekly_capacity if person is not None else DEFAULT_WEEKLY_CAPACITY
    per_day = s.allocation_percent / HUNDRED * capacity / DAYS_PER_WEEK
    if per_day <= 0:
        return []
    entity = project.legal_entity_id
    starts = [inp.as_of(entity), s.start, project.start, person.active_from if person else None]
    ends = [inp.horizon_end(entity), s.end, project.end, person.active_to if person else None]
    first = max(d for d in starts if d is not None)
    last = min(d for d in ends if d is not None)
    calendar = inp.calendar_for(person.legal_entity_id if person else project.legal_entity_id)
    priced = s.billable and project.model in TIME_BILLED
    # Only the card's entries that could price this consultant's role, once, not per day.
    candidates = [
        e
        for e in project.rates
        if e.labor_category_id == s.labor_category_id and e.consultant_id in (None, s.consultant_id)
    ]
    # Working days per (month, rate): the arithmetic is then per month, exact all the same.
    counts: dict[tuple[int, int], dict[Decimal | None, int]] = {}
    for day in days(first, last):
        if not calendar.is_working_day(day):
            continue
        rate = None
        if priced:
            entry = resolve_rate(
                candidates, consultant_id=s.consultant_id, labor_category_id=s.labor_category_id, day=day
            )
            rate = entry.rate if entry is not None else None
        by_rate = counts.setdefault((day.year, day.month), {})
        by_rate[rate] = by_rate.get(rate, 0) + 1
    out = []
    for (year, month), by_rate in sorted(counts.items()):
        hours = per_day * sum(by_rate.values())
        priced_days = [(rate, n) for rate, n in by_rate.items() if rate is not None]
        value = sum((per_day * n * rate for rate, n in priced_days), ZERO) if priced_days else None
        out.append(ScheduledMonth(f"{year:04d}-{month:02d}", hours, value))
    return out


def weighted_pipeline(o: Opportunity) -> list[tuple[str, Decimal]]:
    """amount x probability spread evenly over duration_months from expected_start's month; each
    month rounded to the currency's minor unit, the last taking the remainder so they add up."""
    if o.stage.strip().upper().replace(" ", "_").replace("-", "_") in CLOSED_STAGES:
        return []
    weighted = o.amount * o.probability
    if weighted == 0:
        return []
    months = max(o.duration_months, 1)
    each = round_money(weighted / months, o.currency)
    first = month_of(o.expected_start)
    spread = [(add_months(first, i), each) for i in range(months - 1)]
    spread.append((add_months(first, months - 1), weighted - each * (months - 1)))
    return spread


def _narrowed(inp: Inputs, filters: Filters) -> Inputs:
    """Inputs without what the project, customer and legal-entity filters exclude anyway (rows
    are filtered again at the end; this only saves work)."""
    if not (
        filters.project_id
        or filters.customer_id
        or filters.legal_entity_id
        or filters.legal_entity_ids is not None
    ):
        return inp

    def keeps(project_id: str, customer_id: str, legal_entity_id: str) -> bool:
        p = inp.projects.get(project_id)
        if p is not None:
            customer_id, legal_entity_id = p.customer_id, p.legal_entity_id
        return (
            (not filters.project_id or project_id == filters.project_id)
            and (not filters.customer_id or customer_id == filters.customer_id)
            and (not filters.legal_entity_id or legal_entity_id == filters.legal_entity_id)
            and filters.in_scope(legal_entity_id)
        )

    return replace(
        inp,
        staffing=[s for s in inp.staffing if keeps(s.project_id, "", "")],
        milestones=[m for m in inp.milestones if keeps(m.project_id, "", "")],
        work=[w for w in inp.work if keeps(w.project_id, w.customer_id, w.legal_entity_id)],
        invoiced=[i for i in inp.invoiced if keeps(i.project_id, i.customer_id, i.legal_entity_id)],
        opportunities=[o for o in inp.opportunities if keeps("", o.customer_id, o.legal_entity_id)],
    )


def compute(inp: Inputs, filters: Filters = Filters()) -> Forecast:
    """The forecast per project and month, its roll-ups and project summaries."""
    inp = _narrowed(inp, filters)
    rows: dict[tuple[str, str, str], Row] = {}
    missing: set[str] = set()

    def project_row(project_id: str, month: str, fallback: tuple[str, str, str]) -> Row:
        key = (project_id, "", month)
        if key not in rows:
            p = inp.projects.get(project_id)
            customer, entity, currency = (
                (p.customer_id, p.legal_entity_id, p.currency) if p is not None else fallback
            )
            rows[key] = Row(project_id, "", customer, entity, month, currency)
        return rows[key]

    def convert(amount: Decimal, base: str, quote: str, month: str) -> Decimal:
        fx = inp.fx.rate(base, quote, month_end(month))
        if fx is None:
            missing.add(f"{base}/{quote}")
            return ZERO
        return amount * fx

    # Approved work: hours always; WIP while not invoiced and the line bills time.
    wip_by_project: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for w in inp.work:
        row = project_row(w.project_id, w.month, (w.customer_id, w.legal_entity_id, w.currency))
        row.approved_hours += w.hours
        p = inp.projects.get(w.project_id)
        bills_time = p is None or p.model in TIME_BILLED
        if not w.invoiced and w.billable and w.value is not None and bills_time:
            wip = convert(w.value, w.currency, row.currency, w.month)
            row.amounts.wip += wip
            wip_by_project[w.project_id] += wip

    # Invoices: posted is actual revenue, draft or approved is billed.
    billed_by_line: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for i in inp.invoiced:
        row = project_row(i.project_id, i.month, (i.customer_id, i.legal_entity_id, i.currency))
        amount = convert(i.amount, i.currency, row.currency, i.month)
        if i.posted:
            row.amounts.actual_revenue += amount
        else:
            row.amounts.billed += amount
        if i.contract_line_id:
            billed_by_line[i.contract_line_id] += amount

    # Scheduled time, then each CAPPED line's remaining cap spent month by month.
    scheduled: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for s in inp.staffing:
        for m in scheduled_months(inp, s):
            row = project_row(s.project_id, m.month, ("", "", ""))
            row.scheduled_hours += m.hours
            if m.value is not None:
                scheduled[(s.project_id, m.month)] += m.value
    remaining_cap: dict[str, Decimal] = {}
    for (project_id, month), value in sorted(scheduled.items(), key=lambda kv: kv[0]):
        p = inp.projects[project_id]
        row = rows[(project_id, "", month)]
        amount = convert(value, p.rate_currency or p.currency, row.currency, month)
        if p.model is Model.CAPPED and p.cap_amount is not None:
            if project_id not in remaining_cap:
                spent = billed_by_line.get(p.contract_line_id, ZERO) + wip_by_project.get(project_id, ZERO)
                remaining_cap[project_id] = max(ZERO, p.cap_amount - spent)
            amount = min(amount, remaining_cap[project_id])
            remaining_cap[project_id] -= amount
        row.amounts.scheduled += amount

    # Milestones not yet invoiced count in the month they are due.
    for milestone in inp.milestones:
        if milestone.invoiced or milestone.project_id not in inp.projects:
            continue
        due = project_row(milestone.project_id, month_of(milestone.due_date), ("", "", ""))
        due.amounts.milestones += milestone.amount

    # Weighted pipeline: one row per opportunity and month.
    for o in inp.opportunities:
        for month, amount in weighted_pipeline(o):
            key = ("", o.id, month)
            row = rows.setdefault(key, Row("", o.id, o.customer_id, o.legal_entity_id, month, o.currency))
            row.amounts.weighted_pipeline += amount

    # Each row in its legal entity's base currency.
    for row in rows.values():
        base = inp.base_currencies.get(row.legal_entity_id, "")
        row.base_currency = base
        if not base:
            missing.add(f"{row.currency}/?")
            continue
        row.base_fx = inp.fx.rate(row.currency, base, month_end(row.month))
        if row.base_fx is None:
            missing.add(f"{row.currency}/{base}")

    summaries = _summaries(inp, rows.values(), filters)
    kept = sorted(
        (r for r in rows.values() if filters.keeps(r)),
        key=lambda r: (r.project_id, r.opportunity_id, r.month),
    )
    totals = _totals(inp, kept, missing)
    return Forecast(kept, totals, summaries, sorted(missing))


def _summaries(inp: Inputs, rows: Iterable[Row], filters: Filters) -> list[ProjectSummary]:
    """Budget and EAC per project over every month (the month filter does not apply)."""
    out: dict[str, ProjectSummary] = {}
    whole = replace(filters, month_from="", month_to="")
    for row in rows:
        if not row.project_id or not whole.keeps(row):
            continue
        p = inp.projects.get(row.project_id)
        summary = out.setdefault(
            row.project_id, ProjectSummary(row.project_id, row.currency, p.budget_hours if p else None)
        )
        summary.approved_hours += row.approved_hours
        summary.scheduled_hours += row.scheduled_hours
        summary.eac_revenue += row.amounts.forecast_revenue - row.amounts.weighted_pipeline
    return sorted(out.values(), key=lambda s: s.project_id)


def _totals(inp: Inputs, rows: Iterable[Row], missing: set[str]) -> list[Total]:
    """Customer and legal-entity roll-ups in base currency; the firm's in the reporting currency."""
    out: dict[tuple[Scope, str, str, str], Total] = {}

    def add(scope: Scope, key: str, row: Row, currency: str, amounts: Figures) -> None:
        total = out.setdefault((scope, key, row.month, currency), Total(scope, key, row.month, currency))
        total.approved_hours += row.approved_hours
        total.scheduled_hours += row.scheduled_hours
        total.amounts.add(amounts)

    for row in rows:
        base = row.base
        if base is None:
            continue
        add(Scope.CUSTOMER, row.customer_id, row, row.base_currency, base)
        add(Scope.LEGAL_ENTITY, row.legal_entity_id, row, row.base_currency, base)
        fx = inp.fx.rate(row.base_currency, inp.reporting_currency, month_end(row.month))
        if fx is None:
            missing.add(f"{row.base_currency}/{inp.reporting_currency}")
            continue
        add(Scope.FIRM, "", row, inp.reporting_currency, base.times(fx))
    order = {Scope.CUSTOMER: 0, Scope.LEGAL_ENTITY: 1, Scope.FIRM: 2}
    return sorted(out.values(), key=lambda t: (order[t.scope], t.id, t.month, t.currency))


def as_of_date(inp: Inputs, filters: Filters) -> dt.date:
    """The day a forecast shows as its as-of day: the project's legal entity's (or the legal
    entity's) when it is filtered to one, else the earliest of the legal entities' (the first
    day any scheduled time starts on)."""
    project = inp.projects.get(filters.project_id) if filters.project_id else None
    if project is not None:
        return inp.as_of(project.legal_entity_id)
    if filters.legal_entity_id:
        return inp.as_of(filters.legal_entity_id)
    return inp.earliest_as_of()


def months_between(first: str, last: str) -> list[str]:
    """Every month from first to last, both included."""
    out, month = [], first
    while month <= last:
        out.append(month)
        month = add_months(month, 1)
    return out
