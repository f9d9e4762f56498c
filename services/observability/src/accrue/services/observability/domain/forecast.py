"""Forecast variance: the latest forecast version against the previous one, and against actuals.

Both are per legal entity and currency (a version's totals are in the legal entity's base
currency), summed over months:

- against the previous version: latest forecast revenue − previous forecast revenue, over every
  month either version covers (a month one of them lacks counts as zero there);
- against actuals: for the months that had closed when the latest version was taken, actual
  revenue (posted invoices, as the latest version records it) − what the previous version
  forecast for them; without a previous version, the latest version's own forecast. Positive
  means more revenue than forecast. A month has closed for a legal entity once it has ended in
  the legal entity's time zone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from accrue.runtime.clock import local_date


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """One legal entity's forecast for one month in one version."""

    legal_entity_id: str
    month: str  # "YYYY-MM"
    currency: str
    forecast_revenue: Decimal
    actual_revenue: Decimal


@dataclass(frozen=True, slots=True)
class Variance:
    """The variance of one legal entity and currency."""

    legal_entity_id: str
    currency: str
    latest_forecast: Decimal
    previous_forecast: Decimal
    against_previous: Decimal
    against_actuals: Decimal


def month_taken_in(taken_at: dt.datetime, zone_name: str) -> str:
    """The month ("YYYY-MM") a version taken at that instant was taken in, in a time zone."""
    return f"{local_date(taken_at, zone_name):%Y-%m}"


def forecast_variance(
    latest: Iterable[MonthTotal],
    previous: Iterable[MonthTotal] | None,
    taken_at: dt.datetime,
    time_zones: Mapping[str, str],
) -> list[Variance]:
    """Variance per legal entity and currency.

    previous is None when the latest version is the first; taken_at is when the latest version
    was taken: the months before the one it fell in, in each legal entity's zone (time_zones,
    UTC for one not there), have closed.
    """
    latest_by = {(t.legal_entity_id, t.currency, t.month): t for t in latest}
    previous_by = {(t.legal_entity_id, t.currency, t.month): t for t in previous or ()}
    zero = Decimal(0)
    now_total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    before_total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    vs_actuals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for le, cur, month in latest_by.keys() | previous_by.keys():
        now = latest_by.get((le, cur, month))
        before = previous_by.get((le, cur, month))
        now_total[(le, cur)] += now.forecast_revenue if now else zero
        before_total[(le, cur)] += before.forecast_revenue if before else zero
        if now is not None and month < month_taken_in(taken_at, time_zones.get(le, "")):
            if previous is None:
                expected = now.forecast_revenue
            else:
                expected = before.forecast_revenue if before else zero
            vs_actuals[(le, cur)] += now.actual_revenue - expected
    return [
        Variance(
            legal_entity_id=le,
            currency=cur,
            latest_forecast=now_total[(le, cur)],
            previous_forecast=before_total[(le, cur)],
            against_previous=now_total[(le, cur)] - before_total[(le, cur)] if previous is not None else zero,
            against_actuals=vs_actuals[(le, cur)],
        )
        for le, cur in sorted(now_total.keys() | before_total.keys())
    ]
