"""The one clock: what "now" and a business date are, and who may move the clock."""

import datetime as dt

import pytest

from accrue.runtime.clock import FixedClock, StartedClock, clock_for, local_date, local_midnight, system_clock
from accrue.runtime.settings import ServiceSettings, load_settings

pytestmark = pytest.mark.dates

# 22:00 UTC on 28 February 2027: 08:00 on 1 March in Brisbane (UTC+10), 14:00 on 28 February in
# Los Angeles (UTC-8).
INSTANT = dt.datetime(2027, 2, 28, 22, 0, tzinfo=dt.UTC)


def test_a_business_date_is_the_date_in_the_entitys_zone() -> None:
    assert local_date(INSTANT, "Australia/Brisbane") == dt.date(2027, 3, 1)
    assert local_date(INSTANT, "America/Los_Angeles") == dt.date(2027, 2, 28)
    assert local_date(INSTANT, "UTC") == dt.date(2027, 2, 28)
    assert local_date(INSTANT, "") == dt.date(2027, 2, 28)  # no zone given: UTC


def test_a_day_begins_at_local_midnight_whatever_the_offset_that_day() -> None:
    assert local_midnight(dt.date(2027, 3, 1), "Australia/Brisbane") == dt.datetime(
        2027, 2, 28, 14, 0, tzinfo=dt.UTC
    )
    # London's clocks go forward at 01:00 UTC on 28 March 2027: that day began on GMT, the next on BST.
    assert local_midnight(dt.date(2027, 3, 28), "Europe/London") == dt.datetime(
        2027, 3, 28, 0, 0, tzinfo=dt.UTC
    )
    assert local_midnight(dt.date(2027, 3, 29), "Europe/London") == dt.datetime(
        2027, 3, 28, 23, 0, tzinfo=dt.UTC
    )


def test_a_started_clock_starts_at_its_instant_and_runs() -> None:
    clock = StartedClock(dt.datetime(2027, 2, 28, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    first = clock()
    assert dt.datetime(2027, 2, 28, 22, 0, tzinfo=dt.UTC) <= first < INSTANT + dt.timedelta(seconds=5)
    assert first.utcoffset() == dt.timedelta(0)
    assert clock() >= first


def test_a_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock(INSTANT)
    assert clock() == clock() == INSTANT
    clock.advance(dt.timedelta(hours=3))
    assert clock() == INSTANT + dt.timedelta(hours=3)
    with pytest.raises(ValueError, match="UTC offset"):
        FixedClock(dt.datetime(2027, 1, 1))  # noqa: DTZ001 - the point of the test


def test_settings_pick_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCRUE_CLOCK_START", raising=False)
    assert clock_for(load_settings(ServiceSettings).clock_start) is system_clock
    monkeypatch.setenv("ACCRUE_CLOCK_START", "2027-02-28T22:00:00Z")
    started = clock_for(load_settings(ServiceSettings).clock_start)
    assert isinstance(started, StartedClock)
    assert INSTANT <= started() < INSTANT + dt.timedelta(seconds=5)


def test_production_refuses_a_made_up_clock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCRUE_CLOCK_START", "2027-02-28T22:00:00Z")
    monkeypatch.setenv("ACCRUE_ENVIRONMENT", "production")
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    assert "ACCRUE_CLOCK_START is for tests and demos" in capsys.readouterr().err


def test_a_clock_start_without_an_offset_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCRUE_CLOCK_START", "2027-02-28T22:00:00")
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    assert "CLOCK_START" in capsys.readouterr().err
