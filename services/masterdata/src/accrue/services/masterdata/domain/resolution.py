"""Effective-dated values (FX and tax rates) and the arithmetic done on them.

A rate applies from its effective date until the next one for the same key takes over, so the
value on a day is the one with the latest effective date on or before it. Amounts are exact
until the one rounding step of accrue.money.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TypeVar

from accrue.money import round_money

T = TypeVar("T")


def effective_on(items: Iterable[T], day: dt.date, effective: Callable[[T], dt.date]) -> T | None:
    """The item in effect on day: the latest effective date on or before it (None if none)."""
    best: T | None = None
    best_day: dt.date | None = None
    for item in items:
        start = effective(item)
        if start <= day and (best_day is None or start > best_day):
            best, best_day = item, start
    return best


def convert(amount: Decimal, rate: Decimal, currency: str) -> tuple[Decimal, Decimal]:
    """(amount × rate rounded once to currency's minor unit, the exact product)."""
    exact = amount * rate
    return round_money(exact, currency), exact


def tax_on(amount: Decimal, rate: Decimal, currency: str) -> Decimal:
    """The tax on an amount, rounded once to the currency's minor unit (docs/money.md)."""
    return round_money(amount * rate, currency)
