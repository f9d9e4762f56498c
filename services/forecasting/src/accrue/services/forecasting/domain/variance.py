"""Variance between two forecast versions, and a version's accuracy against actuals.

Formulas (docs/forecasting.md, "Variance"): for one project (or opportunity) and month, with
hours h (approved + scheduled), forecast revenue v and average rate r = v / h in the base (1)
and other (2) version:

* change = v2 - v1 = volume + rate + timing, exactly;
* rate = (r2 - r1) x h2 when the month has hours in both versions, else 0;
* the rest, q = change - rate, is the quantity change valued at the base rate. Within a
  project, the part of q offset by opposite changes in its other months is timing (moved
  between months; it sums to zero per project); what is left is volume (the project's net
  change).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class Point:
    """A version's figures for one project (or opportunity) and month."""

    project_id: str
    opportunity_id: str
    month: str
    currency: str
    hours: Decimal
    revenue: Decimal

    @property
    def key(self) -> tuple[str, str, str]:
        """What a point is matched on between versions."""
        return (self.project_id, self.opportunity_id, self.month)


@dataclass(frozen=True)
class Variance:
    """The change of one project's month between two versions, split."""

    project_id: str
    opportunity_id: str
    month: str
    currency: str
    base_hours: Decimal
    other_hours: Decimal
    base_revenue: Decimal
    other_revenue: Decimal
    volume: Decimal
    rate: Decimal
    timing: Decimal

    @property
    def change(self) -> Decimal:
        """other - base revenue."""
        return self.other_revenue - self.base_revenue


def compare(base: Iterable[Point], other: Iterable[Point]) -> list[Variance]:
    """Per project and month, the change from base to other split into volume, rate and timing."""
    before = {p.key: p for p in base}
    after = {p.key: p for p in other}
    rate_part: dict[tuple[str, str, str], Decimal] = {}
    quantity: dict[tuple[str, str, str], Decimal] = {}
    for key in before.keys() | after.keys():
        b, a = before.get(key), after.get(key)
        h1, v1 = (b.hours, b.revenue) if b else (ZERO, ZERO)
        h2, v2 = (a.hours, a.revenue) if a else (ZERO, ZERO)
        rate = (v2 / h2 - v1 / h1) * h2 if h1 > 0 and h2 > 0 else ZERO
        rate_part[key] = rate
        quantity[key] = v2 - v1 - rate
    timing = _timing(quantity)
    out = []
    for key in sorted(quantity):
        b, a = before.get(key), after.get(key)
        if b is not None and a is not None and b.hours == a.hours and b.revenue == a.revenue:
            continue  # unchanged
        currency = (a or b).currency  # type: ignore[union-attr]
        out.append(
            Variance(
                key[0],
                key[1],
                key[2],
                currency,
                b.hours if b else ZERO,
                a.hours if a else ZERO,
                b.revenue if b else ZERO,
                a.revenue if a else ZERO,
                volume=quantity[key] - timing[key],
                rate=rate_part[key],
                timing=timing[key],
            )
        )
    return out


def _timing(quantity: dict[tuple[str, str, str], Decimal]) -> dict[tuple[str, str, str], Decimal]:
    """The part of each month's quantity change offset by the project's other months.

    With N the project's net change: a month changing against N's sign (or any month when N is
    zero) is all timing; a month changing with N's sign keeps |N| of those months' total as
    volume, in proportion, the rest is timing. Timing then sums to zero per project.
    """
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for key in quantity:
        groups[(key[0], key[1])].append(key)
    out: dict[tuple[str, str, str], Decimal] = {}
    for keys in groups.values():
        net = sum((quantity[k] for k in keys), ZERO)
        same = [k for k in keys if net != 0 and quantity[k] * net > 0]
        same_total = sum((abs(quantity[k]) for k in same), ZERO)
        for k in keys:
            if k in same:
                out[k] = quantity[k] * (1 - abs(net) / same_total)
            else:
                out[k] = quantity[k]
    return out


@dataclass(frozen=True)
class Accuracy:
    """One project's forecast for a closed month against its actuals."""

    project_id: str
    currency: str
    forecast_revenue: Decimal
    actual_revenue: Decimal
    forecast_hours: Decimal
    actual_hours: Decimal

    @property
    def variance(self) -> Decimal:
        """Actual less forecast."""
        return self.actual_revenue - self.forecast_revenue


@dataclass(frozen=True)
class AccuracyTotal:
    """Accuracy rows of one currency added up."""

    currency: str
    forecast_revenue: Decimal
    actual_revenue: Decimal
    absolute_error: Decimal

    @property
    def variance(self) -> Decimal:
        """Actual less forecast."""
        return self.actual_revenue - self.forecast_revenue

    @property
    def absolute_percentage_error(self) -> Decimal | None:
        """Sum of |variance| per project over actual revenue (weighted APE), to 4 places."""
        if self.actual_revenue == 0:
            return None
        return (self.absolute_error / self.actual_revenue).quantize(Decimal("0.0001"))


def accuracy(
    forecast: Iterable[Point], actual: Iterable[Point]
) -> tuple[list[Accuracy], list[AccuracyTotal]]:
    """Per project (pipeline rows left out: an opportunity has no actuals of its own)."""
    f = {p.project_id: p for p in forecast if p.project_id}
    a = {p.project_id: p for p in actual if p.project_id}
    rows = []
    for project_id in sorted(f.keys() | a.keys()):
        fp, ap = f.get(project_id), a.get(project_id)
        rows.append(
            Accuracy(
                project_id,
                (fp or ap).currency,  # type: ignore[union-attr]
                fp.revenue if fp else ZERO,
                ap.revenue if ap else ZERO,
                fp.hours if fp else ZERO,
                ap.hours if ap else ZERO,
            )
        )
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO, ZERO])
    for r in rows:
        s = sums[r.currency]
        s[0] += r.forecast_revenue
        s[1] += r.actual_revenue
        s[2] += abs(r.variance)
    totals = [AccuracyTotal(c, s[0], s[1], s[2]) for c, s in sorted(sums.items())]
    return rows, totals
