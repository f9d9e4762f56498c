"""The one clock: the only place product code learns what "now" is.

Every use case, worker and consumer receives a `Clock` from its service's bootstrap and asks it
for the instant (`clock()`, an aware UTC datetime). Business dates are never `now.date()`: a
day belongs to a legal entity's (or a consultant's) time zone, so "today" is
`local_date(clock(), zone)`. An architecture test keeps `datetime.now()`, `date.today()` and
`time.time()` out of product code, so pinning this clock pins the whole system.

Which clock a process runs on comes from its settings (`clock_for`): the system clock, or, for
tests and demos, a clock that starts at a given instant and then runs at real speed
(`ACCRUE_CLOCK_START`). A process whose `ACCRUE_ENVIRONMENT` is `production` refuses that
variable rather than run on a made-up date.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

Clock = Callable[[], dt.datetime]
"""Returns the current instant, timezone-aware, in UTC."""

UTC_ZONE = "UTC"


def system_clock() -> dt.datetime:
    """The machine's wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


class StartedClock:
    """A clock that reads `start` when built and then advances at real speed.

    What a pinned test stack runs on: every process is given the same start instant, and
    leases, back-offs and SLAs still elapse because the clock keeps moving.
    """

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a clock's start instant needs a UTC offset")
        self._start = start.astimezone(dt.UTC)
        self._origin = time.monotonic()

    def __call__(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=time.monotonic() - self._origin)

    def __repr__(self) -> str:
        return f"StartedClock({self._start.isoformat()})"


class FixedClock:
    """A clock that stands still until told to move: for unit and integration tests."""

    def __init__(self, instant: dt.datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("a clock's instant needs a UTC offset")
        self.instant = instant.astimezone(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.instant

    def advance(self, delta: dt.timedelta) -> None:
        """Move the clock forward (or back, with a negative delta)."""
        self.instant += delta

    def set(self, instant: dt.datetime) -> None:
        """Jump to an instant."""
        if instant.tzinfo is None:
            raise ValueError("a clock's instant needs a UTC offset")
        self.instant = instant.astimezone(dt.UTC)


def clock_for(start: dt.datetime | None) -> Clock:
    """The clock a process runs on: the system clock, or one started at `start`."""
    return system_clock if start is None else StartedClock(start)


# -- business dates --------------------------------------------------------------------------------


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name ("" means UTC); KeyError names an unknown one."""
    try:
        return ZoneInfo(name or UTC_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        raise KeyError(name) from None


def is_time_zone(name: str) -> bool:
    """Whether name is an IANA time zone this machine knows (as a legal entity may carry)."""
    return name in _known_zones()


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {UTC_ZONE}


def local_date(instant: dt.datetime, zone_name: str) -> dt.date:
    """The calendar date that an instant falls on in a time zone: the business date."""
    return instant.astimezone(zone(zone_name)).date()


def local_midnight(day: dt.date, zone_name: str) -> dt.datetime:
    """The instant a calendar day begins in a time zone (aware, in UTC)."""
    return dt.datetime.combine(day, dt.time(), zone(zone_name)).astimezone(dt.UTC)
