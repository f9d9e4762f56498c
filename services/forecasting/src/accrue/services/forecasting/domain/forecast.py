"""The live forecast's figures per project and month, and how each is computed.

So far: approved hours, and WIP = approved work not yet invoiced valued at its indicative
rate. Scheduled work, weighted pipeline and posted revenue come with the forecasting issue;
their formulas will live here too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal


def month_of(day: dt.date) -> str:
    """The forecast month of a day, "YYYY-MM"."""
    return f"{day.year:04d}-{day.month:02d}"


@dataclass(frozen=True, slots=True)
class ActualWork:
    """An approved time entry as the forecast sees it."""

    project_id: str
    customer_id: str
    legal_entity_id: str
    month: str
    hours: Decimal
    value: Decimal | None
    currency: str
    invoiced: bool


@dataclass
class Row:
    """One project's month."""

    project_id: str
    customer_id: str
    legal_entity_id: str
    month: str
    currency: str
    approved_hours: Decimal = Decimal(0)
    wip: Decimal = Decimal(0)
    actual_revenue: Decimal = Decimal(0)
    _currencies: set[str] = field(default_factory=set, repr=False)


def rows(work: Iterable[ActualWork]) -> list[Row]:
    """Roll entries up per project and month: hours always, WIP while not invoiced."""
    out: dict[tuple[str, str], Row] = {}
    for w in work:
        row = out.setdefault(
            (w.project_id, w.month), Row(w.project_id, w.customer_id, w.legal_entity_id, w.month, w.currency)
        )
        row.approved_hours += w.hours
        if not w.invoiced and w.value is not None:
            row.wip += w.value
    return sorted(out.values(), key=lambda r: (r.project_id, r.month))
