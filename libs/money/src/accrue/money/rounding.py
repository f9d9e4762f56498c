"""The one rounding policy.

Rule (documented in docs/money.md and applied only through `round_money`):

* Arithmetic on amounts is exact (Decimal with enough precision); nothing is rounded on the way.
* Rounding happens once per invoice line: line amount = quantity × unit price, rounded to the
  currency's minor unit (ISO 4217), half-even by default ("banker's rounding"), which keeps
  rounding bias out of totals. Tax is computed per line from the rounded amount and rounded the
  same way. Totals are sums of rounded lines, so an invoice always adds up.
* A contract may choose half-up instead; the rounding mode is the only thing that varies.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from enum import StrEnum

from accrue.money.currency import minor_units


class Rounding(StrEnum):
    """How a value exactly halfway between two minor units is rounded."""

    HALF_EVEN = ROUND_HALF_EVEN
    HALF_UP = ROUND_HALF_UP


DEFAULT_ROUNDING = Rounding.HALF_EVEN


def round_money(amount: Decimal, currency: str, rounding: Rounding = DEFAULT_ROUNDING) -> Decimal:
    """Round an exact amount to the currency's minor unit (e.g. 2 places for EUR, 0 for JPY)."""
    quantum = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(quantum, rounding=str(rounding))
