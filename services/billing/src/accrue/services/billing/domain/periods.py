"""Billing periods and their cut-off: when the scheduler bills which period.

A contract line is invoiced MONTHLY (the default), SEMI_MONTHLY (1st-15th, 16th-month end) or
WEEKLY (ISO weeks, Monday to Sunday). A period's days are its legal entity's calendar days, so it
ends at midnight in the legal entity's time zone (an IANA name; "" is UTC): November of a
Brisbane (UTC+10) entity ends at 14:00 UTC on 30 November, a Los Angeles (UTC-8) one's at 08:00
UTC on 1 December. The scheduler bills a period once its cut-off has passed: `cutoff` after that
local midnight. Work dated in the period and approved by the cut-off is on that period's invoice;
work approved later ("late work") waits for the next period's scheduled run, which bills
everything unbilled dated up to its own end.

A scheduler that was down over whole periods catches up: every period due since the last one
it billed for the legal entity gets its own run, oldest first (at most MAX_CATCH_UP of them), so
a missed period's work is still invoiced for that period rather than folded into a later one.

Everything here is pure: the time zone comes in as a name, "now" as an argument.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from accrue.runtime.clock import local_date, local_midnight

# How many periods of one kind a scheduler catches up on after being down (a year of months).
MAX_CATCH_UP = 12


class PeriodKind(StrEnum):
    """How often a contract line is invoiced."""

    MONTHLY = "MONTHLY"
    SEMI_MONTHLY = "SEMI_MONTHLY"
    WEEKLY = "WEEKLY"


@dataclass(frozen=True, order=True)
class Period:
    """A billing period, both ends inclusive."""

    start: dt.date
    end: dt.date

    def cutoff(self, delay: dt.timedelta, zone_name: str) -> dt.datetime:
        """When the period is billed: delay after its last day ends in the time zone (aware, UTC)."""
        return local_midnight(self.end + dt.timedelta(days=1), zone_name) + delay


def period_containing(kind: PeriodKind, day: dt.date) -> Period:
    """The period of this kind that day falls in."""
    if kind == PeriodKind.WEEKLY:
        start = day - dt.timedelta(days=day.weekday())
        return Period(start, start + dt.timedelta(days=6))
    last = calendar.monthrange(day.year, day.month)[1]
    if kind == PeriodKind.SEMI_MONTHLY:
        if day.day <= 15:
            return Period(day.replace(day=1), day.replace(day=15))
        return Period(day.replace(day=16), day.replace(day=last))
    return Period(day.replace(day=1), day.replace(day=last))


def latest_due(kind: PeriodKind, now: dt.datetime, delay: dt.timedelta, zone_name: str) -> Period:
    """The most recent period of this kind whose cut-off (in the time zone) has passed at now."""
    # A period is due when local midnight after its end, plus the delay, is not after now: its
    # end is before the local date of (now - delay).
    last_closed_day = local_date(now - delay, zone_name) - dt.timedelta(days=1)
    period = period_containing(kind, last_closed_day)
    if period.end > last_closed_day:
        period = period_containing(kind, period.start - dt.timedelta(days=1))
    return period


def due_since(
    kind: PeriodKind,
    now: dt.datetime,
    delay: dt.timedelta,
    zone_name: str,
    last_billed_end: dt.date | None,
    limit: int = MAX_CATCH_UP,
) -> list[Period]:
    """The latest due period, and before it every one ending after the last scheduled run's
    period, oldest first (at most limit in all).

    The latest is always included, as every tick looks at it again (its runs are made once;
    a legal entity whose work reached billing late still gets its run). With no scheduled run
    yet only the latest is billed: a new installation does not invent runs for a past it never
    scheduled.
    """
    period = latest_due(kind, now, delay, zone_name)
    due = [period]
    while last_billed_end is not None and len(due) < limit:
        period = period_containing(kind, period.start - dt.timedelta(days=1))
        if period.end <= last_billed_end:
            break
        due.append(period)
    return due[::-1]
