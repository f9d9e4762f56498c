"""Working time: when an approval SLA counted in working hours falls due.

An SLA of 8 hours means 8 hours of the legal entity's working time: only the time between
workday_start and workday_end, on its working weekdays that are not holidays, in its time
zone. A Friday 16:00 submission with an 8-hour SLA (Monday to Friday, 09:00 to 17:00) is due
on Monday at 16:00. Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from accrue.runtime.clock import zone

# ISO weekdays (Monday 1 … Sunday 7) worked when a legal entity has no calendar.
DEFAULT_WORKING_DAYS = frozenset({1, 2, 3, 4, 5})
# A run of this many days without any working time means the calendar has none at all.
_MAX_IDLE_DAYS = 800


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """A legal entity's working week, working hours (local time) and holidays."""

    working_days: frozenset[int] = DEFAULT_WORKING_DAYS
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    workday_start: dt.time = dt.time(9)
    workday_end: dt.time = dt.time(17)

    def is_working_day(self, day: dt.date) -> bool:
        """A day of the working week that is not a holiday."""
        return day.isoweekday() in self.working_days and day not in self.holidays


DEFAULT_CALENDAR = WorkingCalendar()


def hours(value: Decimal | int) -> dt.timedelta:
    """A number of hours as an exact duration (to the microsecond, timedelta's resolution)."""
    return dt.timedelta(microseconds=int(Decimal(value) * 3_600_000_000))


def sla_due(
    queued_at: dt.datetime, sla: dt.timedelta, calendar: WorkingCalendar, zone_name: str
) -> dt.datetime:
    """The instant (aware, UTC) by which `sla` of working time has passed since queued_at.

    Each working day's window runs from workday_start to workday_end as local times in the
    zone, measured between real instants, so a day on which the clocks change is an hour
    shorter or longer. The due instant is never later than needed: an SLA used up exactly at
    the end of a day is due then, not the next morning.
    """
    if queued_at.tzinfo is None:
        raise ValueError("queued_at needs a UTC offset")
    remaining = sla
    if remaining <= dt.timedelta(0):
        raise ValueError(f"an SLA must be more than 0 hours, got {sla}")
    tz = zone(zone_name)
    start = queued_at.astimezone(dt.UTC)
    day = start.astimezone(tz).date()
    idle = 0
    while True:
        if calendar.is_working_day(day):
            # Local wall times made aware in the zone, then compared as instants (subtracting
            # two datetimes of one zone would ignore a change of offset between them).
            opens = dt.datetime.combine(day, calendar.workday_start, tz).astimezone(dt.UTC)
            closes = dt.datetime.combine(day, calendar.workday_end, tz).astimezone(dt.UTC)
            begin = max(opens, start)
            if begin < closes:
                available = closes - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
                idle = 0
        idle += 1
        if idle > _MAX_IDLE_DAYS:
            raise ValueError("the calendar has no working time")
        day += dt.timedelta(days=1)
