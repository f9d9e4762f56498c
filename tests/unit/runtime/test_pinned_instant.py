"""The suite runs at a pinned, awkward instant, never at the real date."""

import datetime as dt

import pytest

from accrue.runtime.clock import clock_for
from accrue.runtime.settings import ServiceSettings, load_settings
from accrue.testing.instants import INSTANTS, pinned_instant

pytestmark = pytest.mark.dates


def test_a_service_bootstrapped_in_a_test_runs_on_the_runs_instant(instant: dt.datetime) -> None:
    clock = clock_for(load_settings(ServiceSettings).clock_start)
    elapsed = clock() - instant
    assert dt.timedelta(0) <= elapsed < dt.timedelta(seconds=30)


def test_the_instant_is_drawn_from_the_set_or_named() -> None:
    name, drawn = pinned_instant({})
    assert INSTANTS[name] == drawn
    assert pinned_instant({"ACCRUE_TEST_INSTANT": "leap-day-2028"}) == (
        "leap-day-2028",
        dt.datetime(2028, 2, 29, 12, 0, tzinfo=dt.UTC),
    )
    assert pinned_instant({"ACCRUE_TEST_INSTANT": "2027-06-30T23:59:00-07:00"})[1] == dt.datetime(
        2027, 7, 1, 6, 59, tzinfo=dt.UTC
    )
    with pytest.raises(ValueError, match="neither one of"):
        pinned_instant({"ACCRUE_TEST_INSTANT": "tomorrow"})
    with pytest.raises(ValueError, match="needs a UTC offset"):
        pinned_instant({"ACCRUE_TEST_INSTANT": "2027-06-30T23:59:00"})


def test_the_set_holds_the_awkward_instants_the_dates_rule_needs() -> None:
    brisbane = [i.astimezone(dt.timezone(dt.timedelta(hours=10))) for i in INSTANTS.values()]
    # The last 30 minutes of a month at a UTC+10 entity.
    assert any((t + dt.timedelta(minutes=30)).month != t.month for t in brisbane)
    assert dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC) in INSTANTS.values()
    assert any(i.date() == dt.date(2028, 2, 29) for i in INSTANTS.values())
    # The 2027 daylight-saving changes: EU 28 March and 31 October, US 14 March and 7 November.
    days = {i.date() for i in INSTANTS.values()}
    assert {dt.date(2027, 3, 28), dt.date(2027, 10, 31), dt.date(2027, 3, 14), dt.date(2027, 11, 7)} <= days
