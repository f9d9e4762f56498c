"""Today is a legal entity's: a project's scheduled time and its current month start on its legal
entity's local date, at instants where that date is not UTC's (docs/forecasting.md, docs/time.md)."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.services.forecasting.domain.calendar import WorkCalendar, earliest_local_date
from accrue.services.forecasting.domain.forecast import (
    Filters,
    Inputs,
    Person,
    ProjectTerms,
    Staffing,
    as_of_date,
    compute,
)

pytestmark = pytest.mark.dates

D = Decimal
ZONES = {"au": "Australia/Brisbane", "us": "America/Los_Angeles", "uk": "UTC"}
# 08:00 on Monday 1 March in Brisbane (UTC+10); 14:00 on Sunday 28 February in Los Angeles.
BRISBANE_MORNING = dt.datetime(2027, 2, 28, 22, 0, tzinfo=dt.UTC)
# 23:45 on Sunday 31 January in Los Angeles (UTC-8), while UTC is at 07:45 on 1 February.
LOS_ANGELES_NIGHT = dt.datetime(2027, 2, 1, 7, 45, tzinfo=dt.UTC)
EVERY_DAY = WorkCalendar(working_days=frozenset(range(1, 8)))  # so weekends do not hide the day


def firm(now: dt.datetime, start: dt.date, end: dt.date) -> Inputs:
    """One project and one full-time consultant per legal entity, each assigned start to end;
    a horizon of one month, so the current month is the only one scheduled."""
    projects = {
        le: ProjectTerms(f"p-{le}", f"cu-{le}", le, "GBP", True, dt.date(2026, 1, 1), None) for le in ZONES
    }
    return Inputs(
        now=now,
        horizon_months=1,
        projects={p.id: p for p in projects.values()},
        staffing=[Staffing(f"p-{le}", f"c-{le}", "sc", start, end, D("100")) for le in ZONES],
        people={f"c-{le}": Person(f"c-{le}", le, D("40"), dt.date(2020, 1, 1), None) for le in ZONES},
        calendars=dict.fromkeys(ZONES, EVERY_DAY),
        time_zones=ZONES,
    )


def scheduled(inp: Inputs, le: str) -> dict[str, Decimal]:
    return {r.month: r.scheduled_hours for r in compute(inp).rows if r.project_id == f"p-{le}"}


def test_a_utc_plus_10_project_is_already_in_the_new_month_while_utc_is_not() -> None:
    inp = firm(BRISBANE_MORNING, dt.date(2027, 2, 26), dt.date(2027, 3, 2))
    assert (inp.as_of("au"), inp.as_of("uk"), inp.as_of("us")) == (
        dt.date(2027, 3, 1),
        dt.date(2027, 2, 28),
        dt.date(2027, 2, 28),
    )
    # Brisbane's current month is March: 1 and 2 March; nothing left of February there.
    assert scheduled(inp, "au") == {"2027-03": D("16")}
    # In UTC (and Los Angeles) it is still 28 February, the only day left of the current month.
    assert scheduled(inp, "uk") == {"2027-02": D("8")}
    assert scheduled(inp, "us") == {"2027-02": D("8")}


def test_a_utc_minus_8_project_is_still_in_the_old_month_while_utc_is_not() -> None:
    inp = firm(LOS_ANGELES_NIGHT, dt.date(2027, 1, 30), dt.date(2027, 2, 2))
    assert (inp.as_of("us"), inp.as_of("uk")) == (dt.date(2027, 1, 31), dt.date(2027, 2, 1))
    # Los Angeles still has 31 January to work; UTC has moved on to February's first two days.
    assert scheduled(inp, "us") == {"2027-01": D("8")}
    assert scheduled(inp, "uk") == {"2027-02": D("16")}
    assert scheduled(inp, "au") == {"2027-02": D("16")}


def test_the_as_of_day_shown_is_the_projects_or_else_the_earliest() -> None:
    inp = firm(BRISBANE_MORNING, dt.date(2027, 2, 26), dt.date(2027, 3, 2))
    assert as_of_date(inp, Filters(project_id="p-au")) == dt.date(2027, 3, 1)
    assert as_of_date(inp, Filters(legal_entity_id="us")) == dt.date(2027, 2, 28)
    assert as_of_date(inp, Filters()) == dt.date(2027, 2, 28)


def test_a_month_is_closed_firm_wide_once_it_has_ended_in_every_legal_entity() -> None:
    # Accuracy's "closed month": February has ended in Brisbane, not yet in Los Angeles.
    assert earliest_local_date(BRISBANE_MORNING, ["Australia/Brisbane"]) == dt.date(2027, 3, 1)
    assert earliest_local_date(BRISBANE_MORNING, ["Australia/Brisbane", "America/Los_Angeles"]) == (
        dt.date(2027, 2, 28)
    )
    assert earliest_local_date(LOS_ANGELES_NIGHT, []) == dt.date(2027, 2, 1)  # no entity: UTC
