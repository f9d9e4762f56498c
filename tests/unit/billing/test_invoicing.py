"""Invoice lines: one per role and rate, rounded once per line half-even, caps bill whole entries."""

import datetime as dt
from decimal import Decimal

from accrue.services.billing.domain.invoicing import (
    DraftInvoice,
    PricedItem,
    WorkItem,
    group_lines,
    split_at_cap,
)


def item(entry_id: str, hours: str, day: int = 2, role: str = "sc") -> WorkItem:
    return WorkItem(entry_id, "p1", "c1", role, dt.date(2026, 11, day), Decimal(hours))


def priced(entry_id: str, hours: str, price: str, day: int = 2, role: str = "sc") -> PricedItem:
    return PricedItem(item(entry_id, hours, day, role), f"rate-{price}", Decimal(price))


def test_one_line_per_role_and_unit_price() -> None:
    lines = group_lines(
        "cl1",
        "p1",
        [
            priced("a", "8", "150", 2),
            priced("b", "4", "150", 3),
            priced("c", "2", "160", 20),
            priced("d", "1", "90", 4, "jr"),
        ],
    )
    assert [
        (line.labor_category_id, line.unit_price, [i.time_entry_id for i in line.items]) for line in lines
    ] == [
        ("jr", Decimal("90"), ["d"]),
        ("sc", Decimal("150"), ["a", "b"]),
        ("sc", Decimal("160"), ["c"]),
    ]


def test_line_amount_and_tax_are_rounded_half_even_once_per_line() -> None:
    (line,) = group_lines("cl1", "p1", [priced("a", "0.25", "100.10")])
    line.price("EUR", "VAT", Decimal("0.20"))
    # 0.25 × 100.10 = 25.025 → 25.02 (half-even); tax 25.02 × 0.2 = 5.004 → 5.00
    assert (line.quantity, line.amount, line.tax_amount) == (
        Decimal("0.25"),
        Decimal("25.02"),
        Decimal("5.00"),
    )
    invoice = DraftInvoice("k1", "cu1", "le1", "EUR", [line])
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (
        Decimal("25.02"),
        Decimal("5.00"),
        Decimal("30.02"),
    )
    assert invoice.rounding_residual == Decimal("-0.005")


def test_an_invoice_adds_up_from_its_rounded_lines() -> None:
    lines = group_lines("cl1", "p1", [priced("a", "1.25", "33.33"), priced("b", "0.75", "66.67", role="pm")])
    for line in lines:
        line.price("GBP", "", Decimal(0))
    invoice = DraftInvoice("k1", "cu1", "le1", "GBP", lines)
    assert invoice.total == sum(line.amount for line in lines) == Decimal("41.66") + Decimal("50.00")


def test_cap_bills_whole_entries_oldest_first_and_leaves_the_rest_as_excess() -> None:
    work = [priced("late", "8", "100", 20), priced("early", "8", "100", 2), priced("mid", "8", "100", 10)]
    split = split_at_cap(work, Decimal("1700"), "EUR")
    assert [p.item.time_entry_id for p in split.within] == ["early", "mid"]
    assert [p.item.time_entry_id for p in split.excess] == ["late"]


def test_once_the_cap_is_crossed_later_entries_are_excess_even_if_small() -> None:
    work = [priced("big", "10", "100", 2), priced("small", "1", "100", 3)]
    split = split_at_cap(work, Decimal("500"), "EUR")
    assert (split.within, [p.item.time_entry_id for p in split.excess]) == ([], ["big", "small"])
