"""How unbilled work becomes invoice lines: grouping, pricing, rounding, tax, credits and caps.

The rounding rule, in one place (see docs/money.md and docs/billing.md):
* a line's amount is quantity × unit price. With the default scope (PER_LINE) it is computed
  exactly and rounded once to the invoice currency's minor unit; with PER_ENTRY each entry's
  hours × unit price is rounded and the line is the sum of those. Half-even unless the
  contract says half-up;
* a line's tax = its (rounded) amount × tax rate, rounded the same way, per line;
* subtotal, tax total and total are sums of the rounded line figures, so an invoice always
  adds up; `rounding_residual` (per line and per invoice) shows how far the rounded amounts
  are from the exact ones;
* a unit price converted from another currency keeps its exact value (rate × FX); only line
  amounts and taxes are rounded.

Lines are built incrementally (`LineTotals.add`), so a run can stream millions of entries and
a later call of the same run can add late work to a draft line without recomputing it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from accrue.money import DEFAULT_ROUNDING, Rounding, round_money

ZERO = Decimal(0)


class RoundingScope(StrEnum):
    """What is rounded to the minor unit before summing."""

    PER_LINE = "PER_LINE"
    PER_ENTRY = "PER_ENTRY"


@dataclass(frozen=True, slots=True)
class RoundingPolicy:
    """A contract's rounding: the mode for halfway values and the scope."""

    mode: Rounding = DEFAULT_ROUNDING
    scope: RoundingScope = RoundingScope.PER_LINE

    @property
    def mode_name(self) -> str:
        """HALF_EVEN or HALF_UP, as stored and shown."""
        return "HALF_UP" if self.mode == Rounding.HALF_UP else "HALF_EVEN"


DEFAULT_POLICY = RoundingPolicy()


class LineKind(StrEnum):
    """What an invoice line bills."""

    TIME = "TIME"
    MILESTONE = "MILESTONE"
    ADJUSTMENT = "ADJUSTMENT"
    CREDIT = "CREDIT"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One approved, billable, unbilled time entry (hours are negative on a reversal)."""

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
    # Bill beyond a cap: finance resolved its CAP_EXCEEDED exception with BILL_OVERAGE.
    overage_approved: bool = False


@dataclass
class LineTotals:
    """A line's running figures: exact and rounded, so late work can be added later."""

    quantity: Decimal = ZERO
    exact_amount: Decimal = ZERO
    amount: Decimal = ZERO

    def add(
        self,
        quantity: Decimal,
        unit_price: Decimal,
        currency: str,
        policy: RoundingPolicy,
        *,
        settle: bool = True,
    ) -> None:
        """Add quantity at unit_price and re-round as the policy says (the one rounding step).

        settle=False leaves a PER_LINE amount to `settle` once the whole batch is added, which
        gives the same figure without rounding on every entry.
        """
        exact = quantity * unit_price
        self.quantity += quantity
        self.exact_amount += exact
        if policy.scope == RoundingScope.PER_ENTRY:
            self.amount += round_money(exact, currency, policy.mode)
        elif settle:
            self.settle(currency, policy)

    def settle(self, currency: str, policy: RoundingPolicy) -> None:
        """Round a PER_LINE amount from the exact one (PER_ENTRY amounts are already rounded)."""
        if policy.scope != RoundingScope.PER_ENTRY:
            self.amount = round_money(self.exact_amount, currency, policy.mode)

    def tax(self, rate: Decimal, currency: str, policy: RoundingPolicy) -> Decimal:
        """Tax on the rounded amount, rounded the same way."""
        return round_money(self.amount * rate, currency, policy.mode)

    @property
    def rounding_residual(self) -> Decimal:
        """What rounding added to (or took from) the exact amount."""
        return self.amount - self.exact_amount


@dataclass
class DraftLine:
    """A line being built: TIME per (contract line, role, rate-card entry, unit price, tax),
    CREDIT per credited line, MILESTONE per milestone."""

    kind: LineKind
    contract_line_id: str
    project_id: str
    unit_price: Decimal
    labor_category_id: str = ""
    rate_card_entry_id: str = ""
    rate_card_rate: Decimal | None = None
    rate_card_currency: str = ""
    fx_rate: Decimal | None = None
    fx_rate_id: str = ""
    tax_code: str = ""
    tax_rate: Decimal = ZERO
    tax_rate_id: str = ""
    milestone_id: str = ""
    credited_invoice_id: str = ""
    credited_line_id: str = ""
    description: str = ""
    items: list[str] = field(default_factory=list)
    totals: LineTotals = field(default_factory=LineTotals)
    tax_amount: Decimal = ZERO

    @property
    def key(self) -> tuple[object, ...]:
        """Lines with the same key are one line (late work joins its line on a draft).

        Prices and rates are compared as numbers: 150.00 and 150.0000000000 are one price.
        """
        if self.kind == LineKind.CREDIT:
            return (self.contract_line_id, self.kind, self.credited_line_id)
        if self.kind == LineKind.MILESTONE:
            return (self.contract_line_id, self.kind, self.milestone_id)
        return (
            self.contract_line_id,
            self.kind,
            self.labor_category_id,
            self.rate_card_entry_id,
            self.unit_price,
            self.tax_code,
            self.tax_rate,
        )

    def add(
        self, entry_id: str, quantity: Decimal, currency: str, policy: RoundingPolicy, *, settle: bool = True
    ) -> None:
        """Bill quantity more on this line (an entry's hours, or one milestone)."""
        if entry_id:
            self.items.append(entry_id)
        self.totals.add(quantity, self.unit_price, currency, policy, settle=settle)
        if settle:
            self.tax_amount = self.totals.tax(self.tax_rate, currency, policy)

    def settle(self, currency: str, policy: RoundingPolicy) -> None:
        """Round the amount and the tax after a batch added with settle=False."""
        self.totals.settle(currency, policy)
        self.tax_amount = self.totals.tax(self.tax_rate, currency, policy)

    # Kept for readers of the line: quantity, amount and the exact amount.
    @property
    def quantity(self) -> Decimal:
        """Hours (TIME, CREDIT) or units (MILESTONE)."""
        return self.totals.quantity

    @property
    def amount(self) -> Decimal:
        """The rounded amount."""
        return self.totals.amount

    @property
    def exact_amount(self) -> Decimal:
        """quantity × unit price before rounding."""
        return self.totals.exact_amount


def time_lines(
    contract_line_id: str,
    project_id: str,
    priced: Iterable[PricedItem],
    currency: str,
    policy: RoundingPolicy = DEFAULT_POLICY,
    tax_code: str = "",
    tax_rate: Decimal = ZERO,
) -> list[DraftLine]:
    """TIME lines for priced work: one per (role, rate-card entry, unit price), stable order.

    Entries keep the order they come in (a run streams them oldest first) on their line.
    """
    lines: dict[tuple[str, str, Decimal], DraftLine] = {}
    for p in priced:
        key = (p.item.labor_category_id, p.rate_card_entry_id, p.unit_price)
        line = lines.get(key)
        if line is None:
            line = lines[key] = DraftLine(
                kind=LineKind.TIME,
                contract_line_id=contract_line_id,
                project_id=project_id,
                labor_category_id=p.item.labor_category_id,
                rate_card_entry_id=p.rate_card_entry_id,
                unit_price=p.unit_price,
                tax_code=tax_code,
                tax_rate=tax_rate,
            )
        line.add(p.item.time_entry_id, p.item.hours, currency, policy, settle=False)
    for line in lines.values():
        line.settle(currency, policy)
    return sorted(lines.values(), key=lambda line: (line.labor_category_id, line.unit_price))


@dataclass
class DraftInvoice:
    """A draft for one contract, currency and period."""

    contract_id: str
    customer_id: str
    legal_entity_id: str
    currency: str
    lines: list[DraftLine] = field(default_factory=list)
    policy: RoundingPolicy = DEFAULT_POLICY

    @property
    def subtotal(self) -> Decimal:
        """Sum of the rounded line amounts."""
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def tax_total(self) -> Decimal:
        """Sum of the rounded line taxes."""
        return sum((line.tax_amount for line in self.lines), ZERO)

    @property
    def total(self) -> Decimal:
        """Subtotal plus tax."""
        return self.subtotal + self.tax_total

    @property
    def rounding_residual(self) -> Decimal:
        """Rounded subtotal minus the exact one: what rounding added or took away."""
        return self.subtotal - sum((line.exact_amount for line in self.lines), ZERO)


@dataclass(frozen=True)
class CapSplit:
    """What fits under a cap and what does not."""

    within: list[PricedItem]
    excess: list[PricedItem]

    def excess_value(self, currency: str, policy: RoundingPolicy = DEFAULT_POLICY) -> Decimal:
        """The excess work's value, each entry rounded: the amount finance decides about."""
        return sum(
            (round_money(p.item.hours * p.unit_price, currency, policy.mode) for p in self.excess), ZERO
        )


def split_at_cap(
    priced: Sequence[PricedItem],
    remaining: Decimal,
    currency: str,
    policy: RoundingPolicy = DEFAULT_POLICY,
) -> CapSplit:
    """Whole entries, oldest first, while the lines they make stay within the remaining cap.

    "Within" is judged on the figures that will be invoiced: the entries are grouped into
    lines as `time_lines` does and each line is rounded as the policy says, so rounding can
    never take an invoice past its cap. An entry that would cross the cap, and every later one,
    is excess: it stays unbilled and goes to finance as a CAP_EXCEEDED exception, to bill as
    overage or write off. Entries whose overage finance approved bypass the cap.
    """
    within: list[PricedItem] = []
    excess: list[PricedItem] = []
    lines: dict[tuple[str, str, Decimal], LineTotals] = {}
    used = ZERO
    for p in sorted(priced, key=lambda p: (p.item.work_date, p.item.time_entry_id)):
        if p.overage_approved:
            within.append(p)
            continue
        if excess:
            excess.append(p)
            continue
        key = (p.item.labor_category_id, p.rate_card_entry_id, p.unit_price)
        current = lines.get(key) or LineTotals()
        trial = LineTotals(current.quantity, current.exact_amount, current.amount)
        trial.add(p.item.hours, p.unit_price, currency, policy)
        if used - current.amount + trial.amount <= remaining:
            used += trial.amount - current.amount
            lines[key] = trial
            within.append(p)
        else:
            excess.append(p)
    return CapSplit(within, excess)


def thresholds_reached(cap: Decimal, billed: Decimal, thresholds: Iterable[int]) -> set[int]:
    """The thresholds (percent of the cap) that billed has reached."""
    if cap <= 0:
        return set(thresholds)
    return {t for t in thresholds if billed * 100 >= cap * t}
