"""Exact decimals: parsing rejects anything ambiguous, formatting never rounds, rounding is per currency."""

from decimal import Decimal

import pytest

from accrue.money import (
    DecimalError,
    Rounding,
    format_decimal,
    format_money,
    minor_units,
    parse_decimal,
    round_money,
)


@pytest.mark.parametrize("text", ["0", "7.75", "-12.5", "+3", "1234567890.123456789", "0.0001"])
def test_parses_plain_decimal_strings_exactly(text: str) -> None:
    assert parse_decimal(text) == Decimal(text)


@pytest.mark.parametrize(
    "text", ["", "abc", "1e3", "NaN", "Infinity", "1,000.00", " 7", "7.", ".5", "1.2.3", "0x10"]
)
def test_rejects_what_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(DecimalError):
        parse_decimal(text)


def test_rejects_more_digits_than_a_decimal_can_hold_exactly() -> None:
    with pytest.raises(DecimalError, match="significant digits"):
        parse_decimal("1" * 29)


def test_rejects_non_strings() -> None:
    with pytest.raises(DecimalError, match="decimal string"):
        parse_decimal(7.5)  # type: ignore[arg-type]


def test_minor_units_follow_iso_4217() -> None:
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("KWD"), minor_units("CLF")) == (2, 0, 3, 4)
    with pytest.raises(ValueError, match="ISO 4217"):
        minor_units("XXX")


def test_round_money_is_half_even_by_default() -> None:
    assert round_money(Decimal("0.125"), "EUR") == Decimal("0.12")
    assert round_money(Decimal("0.135"), "EUR") == Decimal("0.14")
    assert round_money(Decimal("0.125"), "EUR", Rounding.HALF_UP) == Decimal("0.13")
    assert round_money(Decimal("1234.5"), "JPY") == Decimal("1234")
    assert round_money(Decimal("1.0005"), "KWD") == Decimal("1.000")


def test_format_never_rounds_and_pads_to_the_minor_unit() -> None:
    assert format_money(Decimal("1125.0000"), "EUR") == "1125.00"
    assert format_money(Decimal("1125"), "JPY") == "1125"
    assert format_money(Decimal("0.125"), "EUR") == "0.125"
    assert format_decimal(Decimal("7.5"), 2) == "7.50"
    assert format_decimal(Decimal("7.50")) == "7.50"
    assert format_decimal(Decimal("-0.00")) == "0.00"
    assert format_decimal(Decimal("1E+2"), 2) == "100.00"
