"""Invoice lines: one per role and rate, rounded once per line (or per entry), caps never crossed."""

import datetime as dt
from decimal import Decimal

from accrue.money import Rounding
from accrue.services.billing.domain.invoicing import (
    DraftInvoice,
    LineTotals,
    PricedItem,
    RoundingPolicy,
    RoundingScope,
    WorkItem,
    split_at_cap,
    thresholds_reached,
    time_lines,
)

HALF_UP = RoundingPolicy(Rounding.HALF_UP)
PER_ENTRY = RoundingPolicy(scope=RoundingScope.PER_ENTRY)


def item(entry_id: str, hours: str, day: int = 2, role: str = "sc") -> WorkItem:
    return WorkItem(entry_id, "p1", "c1", role, dt.date(2026, 11, day), Decimal(hours))


def priced(entry_id: str, hours: str, price: str, day: int = 2, role: str = "sc", **kw: bool) -> PricedItem:
    return PricedItem(item(entry_id, hours, day, role), f"rate-{price}", Decimal(price), **kw)


def test_one_line_per_role_and_rate() -> None:
    lines = time_lines(
        "cl1",
        "p1",
        [
            priced("a", "8", "150", 2),
            priced("b", "4", "150", 3),
            priced("c", "2", "160", 20),
            priced("d", "1", "90", 4, "jr"),
        ],
        "EUR",
    )
    assert [(line.labor_category_id, line.unit_price, line.items) for line in lines] == [
        ("jr", Decimal("90"), ["d"]),
        ("sc", Decimal("150"), ["a", "b"]),
        ("sc", Decimal("160"), ["c"]),
    ]
    assert [line.amount for line in lines] == [Decimal("90.00"), Decimal("1800.00"), Decimal("320.00")]


def test_line_amount_and_tax_are_rounded_half_even_once_per_line() -> None:
    (line,) = time_lines(
        "cl1", "p1", [priced("a", "0.25", "100.10")], "EUR", tax_code="VAT", tax_rate=Decimal("0.20")
    )
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
    assert line.totals.rounding_residual == Decimal("-0.005")


def test_a_contract_may_round_half_up() -> None:
    (line,) = time_lines(
        "cl1", "p1", [priced("a", "0.25", "100.10")], "EUR", HALF_UP, "VAT", Decimal("0.125")
    )
    # 25.025 → 25.03 half-up; tax 25.03 × 0.125 = 3.12875 → 3.13
    assert (line.amount, line.tax_amount) == (Decimal("25.03"), Decimal("3.13"))


def test_per_entry_scope_rounds_each_entry_and_sums() -> None:
    work = [priced("a", "0.25", "10.01"), priced("b", "0.25", "10.01", 3), priced("c", "0.25", "10.01", 4)]
    (per_line,) = time_lines("cl1", "p1", work, "EUR")
    (per_entry,) = time_lines("cl1", "p1", work, "EUR", PER_ENTRY)
    # Each entry 2.5025 → 2.50; three of them 7.50. Per line: 7.5075 → 7.51.
    assert (per_line.amount, per_entry.amount) == (Decimal("7.51"), Decimal("7.50"))
    assert per_entry.exact_amount == per_line.exact_amount == Decimal("7.5075")
    assert per_entry.totals.rounding_residual == Decimal("-0.0075")


def test_the_minor_unit_follows_the_currency() -> None:
    (yen,) = time_lines("cl1", "p1", [priced("a", "1.5", "12345")], "JPY")
    (dinar,) = time_lines("cl1", "p1", [priced("a", "0.25", "10.0005")], "KWD")
    assert (yen.amount, dinar.amount) == (Decimal("18518"), Decimal("2.500"))


def test_an_invoice_adds_up_from_its_rounded_lines() -> None:
    lines = time_lines(
        "cl1", "p1", [priced("a", "1.25", "33.33"), priced("b", "0.75", "66.67", role="pm")], "GBP"
    )
    invoice = DraftInvoice("k1", "cu1", "le1", "GBP", lines)
    assert invoice.total == sum(line.amount for line in lines) == Decimal("41.66") + Decimal("50.00")


def test_late_work_re_rounds_a_line_from_its_exact_amount() -> None:
    totals = LineTotals()
    totals.add(Decimal("0.25"), Decimal("10.01"), "EUR", RoundingPolicy())
    assert totals.amount == Decimal("2.50")
    totals.add(Decimal("0.25"), Decimal("10.01"), "EUR", RoundingPolicy())
    # 5.005 exactly: half-even keeps 5.00, never 2.50 + 2.50 rounded separately by accident.
    assert (totals.quantity, totals.exact_amount, totals.amount) == (
        Decimal("0.50"),
        Decimal("5.0050"),
        Decimal("5.00"),
    )


def test_cap_bills_whole_entries_oldest_first_and_leaves_the_rest_as_excess() -> None:
    work = [priced("late", "8", "100", 20), priced("early", "8", "100", 2), priced("mid", "8", "100", 10)]
    split = split_at_cap(work, Decimal("1700"), "EUR")
    assert [p.item.time_entry_id for p in split.within] == ["early", "mid"]
    assert [p.item.time_entry_id for p in split.excess] == ["late"]
    assert split.excess_value("EUR") == Decimal("800.00")


def test_once_the_cap_is_crossed_later_entries_are_excess_even_if_small() -> None:
    work = [priced("big", "10", "100", 2), priced("small", "1", "100", 3)]
    split = split_at_cap(work, Decimal("500"), "EUR")
    assert (split.within, [p.item.time_entry_id for p in split.excess]) == ([], ["big", "small"])


def test_rounding_never_takes_a_line_past_the_cap() -> None:
    # Two entries of 0.25 h at 10.02 are 2.505 exact: each alone rounds to 2.50 (half-even)
    # but together they are 5.01 on one line. A cap of 5.00 fits only the first.
    work = [priced("a", "0.25", "10.02", 2), priced("b", "0.25", "10.02", 3)]
    split = split_at_cap(work, Decimal("5.00"), "EUR")
    assert [p.item.time_entry_id for p in split.within] == ["a"]
    (line,) = time_lines("cl1", "p1", split.within, "EUR")
    assert line.amount <= Decimal("5.00")


def test_approved_overage_is_billed_beyond_the_cap() -> None:
    work = [priced("a", "8", "100", 2), priced("over", "8", "100", 3, overage_approved=True)]
    split = split_at_cap(work, Decimal("0"), "EUR")
    assert ([p.item.time_entry_id for p in split.within], [p.item.time_entry_id for p in split.excess]) == (
        ["over"],
        ["a"],
    )


def test_thresholds_are_percentages_of_the_cap() -> None:
    assert thresholds_reached(Decimal("1000"), Decimal("799.99"), (80, 90, 100)) == set()
    assert thresholds_reached(Decimal("1000"), Decimal("800"), (80, 90, 100)) == {80}
    assert thresholds_reached(Decimal("1000"), Decimal("1000"), (80, 90, 100)) == {80, 90, 100}
