"""Capacity and utilization per consultant and month."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from accrue.services.forecasting.domain.calendar import days, month_end, month_start
from accrue.services.forecasting.domain.forecast import DAYS_PER_WEEK, ZERO, Inputs, scheduled_months

# Utilization is a ratio shown to four places (85.25 % is "0.8525").
RATIO = Decimal("0.0001")


@dataclass
class Utilization:
    """One consultant's month."""

    consultant_id: str
    legal_entity_id: str
    month: str
    capacity_hours: Decimal = ZERO
    billable_hours: Decimal = ZERO
    approved_hours: Decimal = ZERO
    scheduled_billable_hours: Decimal = ZERO
    scheduled_hours: Decimal = ZERO

    @property
    def actual(self) -> Decimal | None:
        """Billable approved hours / capacity."""
        return _ratio(self.billable_hours, self.capacity_hours)

    @property
    def forecast(self) -> Decimal | None:
        """(Billable approved + billable scheduled hours) / capacity."""
        return _ratio(self.billable_hours + self.scheduled_billable_hours, self.capacity_hours)


def _ratio(part: Decimal, whole: Decimal) -> Decimal | None:
    return (part / whole).quantize(RATIO) if whole > 0 else None


def capacity_hours(inp: Inputs, consultant_id: str, month: str) -> Decimal:
    """Working days of the month (the legal entity's calendar, holidays out, inside the
    consultant's active dates) x weekly capacity / 5."""
    person = inp.people[consultant_id]
    first, last = month_start(month), month_end(month)
    if person.active_from is not None:
        first = max(first, person.active_from)
    if person.active_to is not None:
        last = min(last, person.active_to)
    calendar = inp.calendar_for(person.legal_entity_id)
    working = sum(1 for day in days(first, last) if calendar.is_working_day(day))
    return working * person.weekly_capacity / DAYS_PER_WEEK


def utilization(
    inp: Inputs,
    months: list[str],
    consultant_id: str = "",
    legal_entity_id: str = "",
    legal_entity_ids: frozenset[str] | None = None,
) -> list[Utilization]:
    """Capacity, approved and scheduled hours and utilization per consultant and month, for the
    consultants of the legal entities in legal_entity_ids (the caller's scope; None: all)."""
    wanted = set(months)
    people = [
        p
        for p in inp.people.values()
        if (not consultant_id or p.id == consultant_id)
        and (not legal_entity_id or p.legal_entity_id == legal_entity_id)
        and (legal_entity_ids is None or p.legal_entity_id in legal_entity_ids)
    ]
    out: dict[tuple[str, str], Utilization] = {}
    for person in people:
        for month in months:
            row = out[(person.id, month)] = Utilization(person.id, person.legal_entity_id, month)
            row.capacity_hours = capacity_hours(inp, person.id, month)
    for w in inp.work:
        row_or_none = out.get((w.consultant_id, w.month))
        if row_or_none is None:
            continue
        row_or_none.approved_hours += w.hours
        if w.billable:
            row_or_none.billable_hours += w.hours
    by_consultant: dict[str, list[int]] = defaultdict(list)
    for index, s in enumerate(inp.staffing):
        by_consultant[s.consultant_id].append(index)
    for person in people:
        for index in by_consultant.get(person.id, []):
            s = inp.staffing[index]
            for m in scheduled_months(inp, s):
                if m.month not in wanted:
                    continue
                row = out[(person.id, m.month)]
                row.scheduled_hours += m.hours
                if s.billable:
                    row.scheduled_billable_hours += m.hours
    return sorted(out.values(), key=lambda u: (u.consultant_id, u.month))
