"""How unbilled work becomes invoice lines: grouping, pricing, rounding, tax and caps.

The rounding rule, in one place (see also accrue.money.rounding):
* a TIME line's amount = quantity (hours) × unit price, computed exactly and rounded once to
  the invoice currency's minor unit, half-even unless the contract says otherwise;
* a line's tax = amount × tax rate, rounded the same way, per line;
* subtotal, tax total and total are sums of the rounded line figures, so an invoice always
  adds up; `rounding_residual` shows how far the rounded subtotal is from the exact one.
* A unit price converted from another currency keeps its exact value (rate × FX); only line
  amounts are rounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from accrue.money import DEFAULT_ROUNDING, Rounding, round_money


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One approved, billable, unbilled time entry."""

    time_entry_id: str
    project_id: str
    consultant_id: str
    labor_category_id: str
    work_date: dt.date
    hours: Decimal


@dataclass(frozen=True, slots=True)
class PricedItem:
    """A work item with the price it is billed at, in the invoice currency."""

    item: WorkItem
    rate_card_entry_id: str
    unit_price: Decimal


@dataclass
class DraftLine:
    """A TIME line: one per (contract line, labor category, unit price)."""

    contract_line_id: str
    project_id: str
    labor_category_id: str
    rate_card_entry_id: str
    unit_price: Decimal
    items: list[WorkItem] = field(default_factory=list)
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    exact_amount: Decimal = Decimal(0)
    tax_code: str = ""
    tax_rate: Decimal = Decimal(0)
    tax_amount: Decimal = Decimal(0)

    def price(
        self, currency: str, tax_code: str, tax_rate: Decimal, rounding: Rounding = DEFAULT_ROUNDING
    ) -> None:
        """Set quantity, amount and tax: the one place a line is rounded."""
        self.quantity = sum((i.hours for i in self.items), Decimal(0))
        self.exact_amount = self.quantity * self.unit_price
        self.amount = round_money(self.exact_amount, currency, rounding)
        self.tax_code, self.tax_rate = tax_code, tax_rate
        self.tax_amount = round_money(self.amount * tax_rate, currency, rounding)


@dataclass
class DraftInvoice:
    """A draft for one contract and period."""

    contract_id: str
    customer_id: str
    legal_entity_id: str
    currency: str
    lines: list[DraftLine] = field(default_factory=list)

    @property
    def subtotal(self) -> Decimal:
        """Sum of the rounded line amounts."""
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def tax_total(self) -> Decimal:
        """Sum of the rounded line taxes."""
        return sum((line.tax_amount for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Subtotal plus tax."""
        return self.subtotal + self.tax_total

    @property
    def rounding_residual(self) -> Decimal:
        """Rounded subtotal minus the exact one: what rounding added or took away."""
        return self.subtotal - sum((line.exact_amount for line in self.lines), Decimal(0))


def group_lines(contract_line_id: str, project_id: str, priced: Iterable[PricedItem]) -> list[DraftLine]:
    """One line per (labor category, unit price), in a stable order."""
    lines: dict[tuple[str, Decimal], DraftLine] = {}
    for p in sorted(priced, key=lambda p: (p.item.work_date, p.item.time_entry_id)):
        key = (p.item.labor_category_id, p.unit_price)
        line = lines.get(key)
        if line is None:
            line = lines[key] = DraftLine(
                contract_line_id=contract_line_id,
                project_id=project_id,
                labor_category_id=p.item.labor_category_id,
                rate_card_entry_id=p.rate_card_entry_id,
                unit_price=p.unit_price,
            )
        line.items.append(p.item)
    return sorted(lines.values(), key=lambda line: (line.labor_category_id, line.unit_price))


@dataclass(frozen=True)
class CapSplit:
    """What fits under a cap and what does not."""

    within: list[PricedItem]
    excess: list[PricedItem]


def split_at_cap(priced: Sequence[PricedItem], remaining: Decimal, currency: str) -> CapSplit:
    """Whole entries, oldest first, while their rounded value stays within the remaining cap.

    An entry that would cross the cap, and every later one, is excess: it stays unbilled and
    goes to finance as a CAP_EXCEEDED exception, to bill as overage or write off.
    """
    within: list[PricedItem] = []
    excess: list[PricedItem] = []
    used = Decimal(0)
    for p in sorted(priced, key=lambda p: (p.item.work_date, p.item.time_entry_id)):
        value = round_money(p.item.hours * p.unit_price, currency)
        if not excess and used + value <= remaining:
            within.append(p)
            used += value
        else:
            excess.append(p)
    return CapSplit(within, excess)
