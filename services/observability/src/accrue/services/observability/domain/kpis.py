"""The business KPIs and how they are computed from the work ledger.

Unbilled approved work: time that is approved and billable and not yet on an invoice (a
draft counts as invoiced). Its value is hours × the indicative rate timekeeping found at
validation, summed per currency (billing prices again at the run, so this is an estimate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class UnbilledWork:
    """One approved, billable, uninvoiced time entry as the KPIs see it."""

    legal_entity_id: str
    hours: Decimal
    value: Decimal | None
    currency: str


@dataclass
class LegalEntityFigures:
    """Unbilled hours and value of one legal entity."""

    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


@dataclass
class Figures:
    """The unbilled-work KPIs, firm-wide and per legal entity."""

    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_legal_entity: dict[str, LegalEntityFigures] = field(default_factory=dict)


def unbilled_figures(work: Iterable[UnbilledWork]) -> Figures:
    """Sum the ledger: hours, and value per currency, overall and per legal entity."""
    figures = Figures()
    for item in work:
        entity = figures.by_legal_entity.setdefault(item.legal_entity_id, LegalEntityFigures())
        figures.hours += item.hours
        entity.hours += item.hours
        if item.value is not None and item.currency:
            figures.value[item.currency] += item.value
            entity.value[item.currency] += item.value
    return figures
