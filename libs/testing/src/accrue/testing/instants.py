"""The awkward instants the suite runs at, so no test can lean on the day it happens to run.

`make test` pins the clock to one of these, drawn per run and printed at the top of the report;
`ACCRUE_TEST_INSTANT=<name>` (or any RFC 3339 instant with an offset) reproduces a run.
`make test-dates` runs every date-sensitive test (marker `dates`) under each of them.

Every instant lies after the fixed dates the tests use for their master data (2026), so "in
the past" and "in the future" mean the same under each.
"""

from __future__ import annotations

import datetime as dt
import os
import random

ENV = "ACCRUE_TEST_INSTANT"
# What a service reads to start its clock at an instant (accrue.runtime.settings).
CLOCK_START_ENV = "ACCRUE_CLOCK_START"


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


# name -> the instant, in UTC; the comment says what makes it awkward.
INSTANTS: dict[str, dt.datetime] = {
    # 23:40 on 28 February in Brisbane (UTC+10, no DST): the last half hour of a month there,
    # while UTC says 13:40 the same day.
    "utc+10-month-end": _utc("2027-02-28T13:40:00+00:00"),
    # 08:00 on 1 March in Brisbane while UTC is still 28 February: a UTC+10 consultant's "today"
    # is a day ahead of UTC's.
    "utc+10-new-month-morning": _utc("2027-02-28T22:00:00+00:00"),
    # 23:45 on 31 January in Los Angeles (UTC-8) while UTC is already 1 February.
    "utc-8-month-end": _utc("2027-02-01T07:45:00+00:00"),
    # Half an hour before the year ends in UTC (Brisbane is already in the new year).
    "utc-year-end": _utc("2026-12-31T23:30:00+00:00"),
    # A leap day.
    "leap-day-2028": _utc("2028-02-29T12:00:00+00:00"),
    # Half an hour before the EU's clocks go forward (01:00 UTC, 28 March 2027).
    "eu-dst-spring-2027": _utc("2027-03-28T00:30:00+00:00"),
    # Half an hour before the EU's clocks go back (01:00 UTC, 31 October 2027).
    "eu-dst-autumn-2027": _utc("2027-10-31T00:30:00+00:00"),
    # Half an hour before the US's clocks go forward (02:00 PST = 10:00 UTC, 14 March 2027).
    "us-dst-spring-2027": _utc("2027-03-14T09:30:00+00:00"),
    # Half an hour before the US's clocks go back (02:00 PDT = 09:00 UTC, 7 November 2027).
    "us-dst-autumn-2027": _utc("2027-11-07T08:30:00+00:00"),
}


def pinned_instant(environ: dict[str, str] | None = None) -> tuple[str, dt.datetime]:
    """The run's instant: ACCRUE_TEST_INSTANT (a name above or an RFC 3339 instant), else drawn."""
    env = os.environ if environ is None else environ
    chosen = env.get(ENV, "").strip()
    if not chosen:
        chosen = random.SystemRandom().choice(sorted(INSTANTS))
    if chosen in INSTANTS:
        return chosen, INSTANTS[chosen]
    try:
        instant = dt.datetime.fromisoformat(chosen)
    except ValueError:
        raise ValueError(
            f"{ENV}={chosen!r} is neither one of {', '.join(sorted(INSTANTS))} nor an RFC 3339 instant"
        ) from None
    if instant.tzinfo is None:
        raise ValueError(f"{ENV}={chosen!r} needs a UTC offset")
    return chosen, instant.astimezone(dt.UTC)
