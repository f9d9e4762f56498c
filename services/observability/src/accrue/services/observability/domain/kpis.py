"""The business KPIs and how they are computed from the work ledger.

Unbilled approved work: time that is approved and billed by the hour (billable, with the
indicative rate timekeeping found; billable time on a fixed-fee line has none, because its
milestones are billed instead), not reversed and not yet on an invoice (a draft counts as
invoiced). Its value is hours × the indicative rate timekeeping
found at validation, summed per currency (billing prices again at the run, so this is an
estimate). Its age is counted in whole days from the day of approval to today, both business
dates of the legal entity (in its time zone), and reported in fixed buckets so the metric's
labels stay bounded.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from accrue.runtime.clock import local_date, local_midnight

# (label, last day in the bucket); the last bucket is open-ended.
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("0-7d", 7),
    ("8-30d", 30),
    ("31-60d", 60),
    ("61-90d", 90),
    ("over-90d", None),
)


def age_bucket(age_days: int) -> str:
    """The bucket label for work approved age_days ago."""
    for label, last in AGE_BUCKETS:
        if last is None or age_days <= last:
            return label
    raise AssertionError("the last bucket is open-ended")


def age_days(approved_at: dt.datetime, now: dt.datetime, zone_name: str) -> int:
    """Whole days from the day of approval to today, both in the legal entity's zone."""
    return (local_date(now, zone_name) - local_date(approved_at, zone_name)).days


def bucket_starts(now: dt.datetime, zone_name: str) -> list[tuple[str, dt.datetime]]:
    """Where each bucket but the open-ended last begins, youngest first: work approved at or after
    the instant is that bucket's age or younger (the local midnight that many days ago)."""
    today = local_date(now, zone_name)
    return [
        (label, local_midnight(today - dt.timedelta(days=last), zone_name))
        for label, last in AGE_BUCKETS
        if last is not None
    ]


@dataclass(frozen=True, slots=True)
class UnbilledWork:
    """Approved, billable, uninvoiced work of one legal entity and currency approved on one day.

    approved_at is the earliest approval among it (None: approval not seen yet).
    """

    legal_entity_id: str
    hours: Decimal
    value: Decimal | None
    currency: str
    approved_at: dt.datetime | None = None


@dataclass
class AgeFigures:
    """Unbilled hours and value (per currency) in one age bucket."""

    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


@dataclass
class LegalEntityFigures:
    """Unbilled hours and value of one legal entity, in total and per age bucket."""

    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_age: dict[str, AgeFigures] = field(default_factory=dict)
    oldest_approved_at: dt.datetime | None = None
    oldest_age_days: int = 0  # the oldest work's age in days, as the buckets count them

    def oldest_age_seconds(self, now: dt.datetime) -> float:
        """How long the oldest unbilled work has waited since approval (0 when none is dated)."""
        if self.oldest_approved_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_approved_at).total_seconds())


@dataclass
class Figures:
    """The unbilled-work KPIs, firm-wide and per legal entity."""

    hours: Decimal = Decimal(0)
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_legal_entity: dict[str, LegalEntityFigures] = field(default_factory=dict)


def unbilled_figures(
    work: Iterable[UnbilledWork], now: dt.datetime, time_zones: Mapping[str, str]
) -> Figures:
    """Sum the ledger: hours, and value per currency, overall, per legal entity and per age.

    Ages are in each legal entity's time zone (time_zones, IANA by legal entity; UTC for one not
    there). Work without an approval time (its approval event not seen yet) counts in the
    youngest bucket.
    """
    figures = Figures()
    for item in work:
        entity = figures.by_legal_entity.setdefault(item.legal_entity_id, LegalEntityFigures())
        zone_name = time_zones.get(item.legal_entity_id, "")
        age = max(0, age_days(item.approved_at, now, zone_name)) if item.approved_at else 0
        bucket = entity.by_age.setdefault(age_bucket(age), AgeFigures())
        figures.hours += item.hours
        entity.hours += item.hours
        bucket.hours += item.hours
        if item.value is not None and item.currency:
            figures.value[item.currency] += item.value
            entity.value[item.currency] += item.value
            bucket.value[item.currency] += item.value
        if item.approved_at is not None and (
            entity.oldest_approved_at is None or item.approved_at < entity.oldest_approved_at
        ):
            entity.oldest_approved_at = item.approved_at
            entity.oldest_age_days = age
    return figures
