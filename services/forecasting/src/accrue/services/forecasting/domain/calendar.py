"""Working days: which days count for capacity and scheduled time."""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from accrue.runtime.clock import local_date

# ISO weekdays (Monday 1 … Sunday 7) worked when a legal entity has no calendar.
DEFAULT_WORKING_DAYS = frozenset({1, 2, 3, 4, 5})


@dataclass(frozen=True)
class WorkCalendar:
    """A legal entity's working week and holidays."""

    working_days: frozenset[int] = DEFAULT_WORKING_DAYS
    holidays: frozenset[dt.date] = field(default_factory=frozenset)

    def is_working_day(self, day: dt.date) -> bool:
        """A day on the working week that is not a holiday."""
        return day.isoweekday() in self.working_days and day not in self.holidays


def month_of(day: dt.date) -> str:
    """The forecast month of a day, "YYYY-MM"."""
    return f"{day.year:04d}-{day.month:02d}"


def earliest_local_date(instant: dt.datetime, zone_names: Iterable[str]) -> dt.date:
    """The earliest calendar date the instant falls on in any of the zones (UTC's when there are
    none): the day a firm-wide question ("is this month over everywhere?") is judged on."""
    return min((local_date(instant, name) for name in zone_names), default=local_date(instant, ""))


def month_start(month: str) -> dt.date:
    """The first day of a "YYYY-MM" month."""
    return dt.date(int(month[:4]), int(month[5:7]), 1)


def month_end(month: str) -> dt.date:
    """The last day of a "YYYY-MM" month."""
    first = month_start(month)
    return first.replace(day=_calendar.monthrange(first.year, first.month)[1])


def add_months(month: str, count: int) -> str:
    """The month count months after (or before) month."""
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def days(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    """Every day from first to last, both included."""
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)
