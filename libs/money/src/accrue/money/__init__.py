"""Exact money: decimal parsing, ISO 4217 currencies and the rounding policy.

Every amount, rate, hour count and FX rate in Accrue is a `decimal.Decimal` from the moment it
is parsed until it is formatted for the wire. Floats never touch money.

The rounding policy lives in `rounding.py` and nowhere else.
"""

from accrue.money.currency import is_currency, minor_units
from accrue.money.decimals import DecimalError, format_decimal, format_money, parse_decimal
from accrue.money.rounding import DEFAULT_ROUNDING, Rounding, round_money

__all__ = [
    "DEFAULT_ROUNDING",
    "DecimalError",
    "Rounding",
    "format_decimal",
    "format_money",
    "is_currency",
    "minor_units",
    "parse_decimal",
    "round_money",
]
