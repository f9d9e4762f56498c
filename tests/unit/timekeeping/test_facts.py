"""Master-data records as the facts timekeeping reads: time zones and working calendars."""

import datetime as dt

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.services.timekeeping.adapters.facts import _calendar, _consultant, _legal_entity
from accrue.services.timekeeping.domain.working_time import DEFAULT_CALENDAR


def test_a_legal_entity_without_a_known_zone_is_in_utc() -> None:
    assert (
        _legal_entity(md.LegalEntity(id="au", time_zone="Australia/Brisbane")).time_zone
        == "Australia/Brisbane"
    )
    assert _legal_entity(md.LegalEntity(id="uk")).time_zone == "UTC"
    assert _legal_entity(md.LegalEntity(id="x", time_zone="Mars/Olympus_Mons")).time_zone == "UTC"


def test_a_consultants_own_zone_is_kept_and_an_unknown_one_left_to_their_legal_entity() -> None:
    def consultant(zone: str) -> md.Consultant:
        return md.Consultant(id="c", legal_entity_id="le", active_from="2020-01-01", time_zone=zone)

    assert _consultant(consultant("America/Los_Angeles")).time_zone == "America/Los_Angeles"
    assert _consultant(consultant("")).time_zone == ""
    assert _consultant(consultant("Nowhere/Special")).time_zone == ""


def test_a_calendar_without_days_or_hours_works_the_default_week() -> None:
    assert _calendar(md.Calendar(id="k", legal_entity_id="le")) == DEFAULT_CALENDAR
    weekend_shift = _calendar(
        md.Calendar(
            id="k",
            legal_entity_id="le",
            working_days=[md.WEEKDAY_SATURDAY, md.WEEKDAY_SUNDAY],
            holidays=[md.Holiday(date="2027-12-25", name="Christmas Day")],
            workday_start="07:30",
            workday_end="15:45",
        )
    )
    assert weekend_shift.working_days == frozenset({6, 7})
    assert weekend_shift.holidays == frozenset({dt.date(2027, 12, 25)})
    assert (weekend_shift.workday_start, weekend_shift.workday_end) == (dt.time(7, 30), dt.time(15, 45))
    assert weekend_shift.is_working_day(dt.date(2027, 12, 26))  # a Sunday
    assert not weekend_shift.is_working_day(dt.date(2027, 12, 25))  # a Saturday, but a holiday
