"""The approval SLA in working hours: weekends, holidays, time zones and clock changes."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.services.timekeeping.domain.working_time import DEFAULT_CALENDAR, WorkingCalendar, hours, sla_due

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """An instant written with its offset."""
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def test_a_friday_afternoon_submission_is_due_on_monday() -> None:
    # Friday 26 February 2027, Monday to Friday 09:00-17:00 UTC: one hour on Friday, seven on Monday.
    assert sla_due(at("2027-02-26T16:00+00:00"), hours(8), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-01T16:00+00:00"
    )
    assert sla_due(at("2027-02-26T15:00+00:00"), hours(8), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-01T15:00+00:00"
    )


def test_time_outside_working_hours_does_not_count() -> None:
    # Queued on a Saturday, or before 09:00, or after 17:00: the clock starts next working morning.
    assert sla_due(at("2027-02-27T11:00+00:00"), hours(2), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-01T11:00+00:00"
    )
    assert sla_due(at("2027-03-01T06:30+00:00"), hours(1), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-01T10:00+00:00"
    )
    assert sla_due(at("2027-03-01T18:00+00:00"), hours(1), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-02T10:00+00:00"
    )


def test_an_sla_used_up_at_the_end_of_a_day_is_due_then() -> None:
    assert sla_due(at("2027-03-01T09:00+00:00"), hours(8), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-01T17:00+00:00"
    )
    assert sla_due(at("2027-03-01T09:00+00:00"), hours(48), DEFAULT_CALENDAR, "UTC") == at(
        "2027-03-08T17:00+00:00"
    )


def test_holidays_are_skipped() -> None:
    # Monday 1 and Tuesday 2 March off: Friday's remaining seven hours run on Wednesday.
    calendar = WorkingCalendar(holidays=frozenset({dt.date(2027, 3, 1), dt.date(2027, 3, 2)}))
    assert sla_due(at("2027-02-26T16:00+00:00"), hours(8), calendar, "UTC") == at("2027-03-03T16:00+00:00")


def test_the_calendars_week_and_hours_apply() -> None:
    # Sunday to Thursday, 08:00-16:00: Thursday 15:00 + 4h is Sunday 11:00.
    calendar = WorkingCalendar(
        working_days=frozenset({7, 1, 2, 3, 4}), workday_start=dt.time(8), workday_end=dt.time(16)
    )
    assert sla_due(at("2027-02-25T15:00+00:00"), hours(Decimal("4")), calendar, "UTC") == at(
        "2027-02-28T11:00+00:00"
    )
    # A fraction of an hour.
    assert sla_due(at("2027-02-28T08:00+00:00"), hours(Decimal("0.25")), calendar, "UTC") == at(
        "2027-02-28T08:15+00:00"
    )


def test_a_utc_plus_10_entity_counts_its_own_working_hours() -> None:
    # 06:00 UTC on Friday 26 February is 16:00 in Brisbane (UTC+10, no DST).
    queued = at("2027-02-26T06:00+00:00")
    due = sla_due(queued, hours(8), DEFAULT_CALENDAR, "Australia/Brisbane")
    assert due == at("2027-03-01T16:00+10:00") == at("2027-03-01T06:00+00:00")
    # 22:00 UTC on Sunday 28 February is already 08:00 on Monday 1 March there: the clock starts
    # at 09:00 local, which UTC still calls Sunday.
    assert sla_due(at("2027-02-28T22:00+00:00"), hours(1), DEFAULT_CALENDAR, "Australia/Brisbane") == at(
        "2027-03-01T10:00+10:00"
    )


def test_a_utc_minus_8_entity_counts_its_own_working_hours() -> None:
    # 00:00 UTC on Saturday 27 February is still Friday 16:00 in Los Angeles (PST, UTC-8).
    queued = at("2027-02-27T00:00+00:00")
    due = sla_due(queued, hours(8), DEFAULT_CALENDAR, "America/Los_Angeles")
    assert due == at("2027-03-01T16:00-08:00") == at("2027-03-02T00:00+00:00")
    # The same instant in UTC is a Saturday: nothing counts until Monday.
    assert sla_due(queued, hours(8), DEFAULT_CALENDAR, "UTC") == at("2027-03-01T17:00+00:00")


def test_working_hours_follow_the_clocks_across_a_daylight_saving_change() -> None:
    # London's clocks go forward at 01:00 UTC on Sunday 28 March 2027: Friday 16:00 GMT + 8h is
    # Monday 16:00 BST, which is 15:00 UTC.
    assert sla_due(at("2027-03-26T16:00+00:00"), hours(8), DEFAULT_CALENDAR, "Europe/London") == at(
        "2027-03-29T16:00+01:00"
    )
    # A window spanning the change is an hour shorter: 00:00-06:00 local on that Sunday is five
    # real hours, so six hours run into Monday's first hour.
    nights = WorkingCalendar(
        working_days=frozenset(range(1, 8)), workday_start=dt.time(0), workday_end=dt.time(6)
    )
    assert sla_due(at("2027-03-28T00:00+00:00"), hours(6), nights, "Europe/London") == at(
        "2027-03-29T01:00+01:00"
    )
    # And an hour longer when they go back (31 October 2027): seven real hours that night.
    assert sla_due(at("2027-10-31T00:00+01:00"), hours(7), nights, "Europe/London") == at(
        "2027-10-31T06:00+00:00"
    )


def test_an_sla_must_be_positive_and_the_calendar_must_have_working_time() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        sla_due(at("2027-03-01T09:00+00:00"), hours(0), DEFAULT_CALENDAR, "UTC")
    with pytest.raises(ValueError, match="UTC offset"):
        sla_due(dt.datetime(2027, 3, 1, 9), hours(1), DEFAULT_CALENDAR, "UTC")  # noqa: DTZ001 - the point
    never = WorkingCalendar(
        holidays=frozenset(dt.date(2027, 1, 1) + dt.timedelta(days=n) for n in range(3000))
    )
    with pytest.raises(ValueError, match="no working time"):
        sla_due(at("2027-03-01T09:00+00:00"), hours(1), never, "UTC")
