"""Parsing and formatting of the decimal strings that carry exact values on the wire."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from accrue.money.currency import minor_units

# Plain notation only: an optional sign, digits, an optional fraction. No exponents, no
# thousands separators, no "NaN"/"Infinity" — a finance API must not guess.
_DECIMAL = re.compile(r"^[+-]?(\d+)(\.\d+)?$")
MAX_DIGITS = 28


class DecimalError(ValueError):
    """A value that is not an exact decimal string."""


def parse_decimal(value: str) -> Decimal:
    """Parse a decimal string such as "1234.50" exactly, or raise DecimalError saying why."""
    if not isinstance(value, str):
        raise DecimalError(f"must be a decimal string, got {type(value).__name__}")
    text = value.strip()
    if text != value:
        raise DecimalError("must not have surrounding spaces")
    match = _DECIMAL.match(text)
    if match is None:
        raise DecimalError(f'{value!r} is not a decimal number like "1234.50"')
    digits = len(match.group(1).lstrip("0")) + len((match.group(2) or "")[1:])
    if digits > MAX_DIGITS:
        raise DecimalError(f"has more than {MAX_DIGITS} significant digits")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes these
        raise DecimalError(f"{value!r} is not a decimal number") from exc


def format_decimal(value: Decimal, places: int | None = None) -> str:
    """Format a Decimal in plain notation, never rounding.

    Without places the value's own exponent is kept ("7.50" stays "7.50"). With places the
    text has at least that many decimals and no trailing zeros beyond them: 1125.0000 with
    places=2 is "1125.00", 1.2345 with places=2 stays "1.2345".
    """
    if not value.is_finite():
        raise DecimalError(f"{value} is not finite")
    if places is not None:
        exponent = value.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        value = value.quantize(Decimal(1).scaleb(min(-places, exponent)))
    text = format(value, "f")
    # Normalise negative zero: "-0.00" is not a value anyone wants to see on an invoice.
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    return text


def format_money(value: Decimal, currency: str) -> str:
    """An amount with (at least) the currency's minor-unit decimals, never rounded."""
    return format_decimal(value, minor_units(currency))
