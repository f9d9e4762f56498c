"""Billing periods and cut-offs, the invoice lifecycle rules, exception resolutions, retries."""

import datetime as dt
import itertools

import pytest

from accrue.runtime import FailedPrecondition, InvalidArgument
from accrue.services.billing.domain import lifecycle
from accrue.services.billing.domain.periods import (
    Period,
    PeriodKind,
    due_since,
    latest_due,
    period_containing,
)
from accrue.services.billing.domain.posting import RetryPolicy

D = dt.date


def test_periods_of_each_frequency() -> None:
    assert period_containing(PeriodKind.MONTHLY, D(2026, 2, 14)) == Period(D(2026, 2, 1), D(2026, 2, 28))
    assert period_containing(PeriodKind.SEMI_MONTHLY, D(2026, 2, 15)) == Period(D(2026, 2, 1), D(2026, 2, 15))
    assert period_containing(PeriodKind.SEMI_MONTHLY, D(2026, 2, 16)) == Period(
        D(2026, 2, 16), D(2026, 2, 28)
    )
    # ISO weeks: 2026-11-25 is a Wednesday.
    assert period_containing(PeriodKind.WEEKLY, D(2026, 11, 25)) == Period(D(2026, 11, 23), D(2026, 11, 29))


def at(day: int, hour: int = 0, month: int = 12) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=dt.UTC)


def test_a_period_is_due_once_its_cut_off_has_passed() -> None:
    delay = dt.timedelta(hours=48)
    november = Period(D(2026, 11, 1), D(2026, 11, 30))
    assert november.cutoff(delay, "UTC") == at(3)
    # One second before the cut-off, October is still the latest due month.
    assert latest_due(PeriodKind.MONTHLY, at(3) - dt.timedelta(seconds=1), delay, "UTC") == Period(
        D(2026, 10, 1), D(2026, 10, 31)
    )
    assert latest_due(PeriodKind.MONTHLY, at(3), delay, "UTC") == november
    assert latest_due(PeriodKind.MONTHLY, at(31, 23), delay, "UTC") == november
    assert latest_due(PeriodKind.SEMI_MONTHLY, at(17, 1), delay, "UTC") == Period(
        D(2026, 11, 16), D(2026, 11, 30)
    )
    assert latest_due(PeriodKind.SEMI_MONTHLY, at(18, 1), delay, "UTC") == Period(
        D(2026, 12, 1), D(2026, 12, 15)
    )
    assert latest_due(PeriodKind.WEEKLY, at(2), dt.timedelta(0), "") == Period(
        D(2026, 11, 23), D(2026, 11, 29)
    )


BRISBANE = "Australia/Brisbane"  # UTC+10 all year
LOS_ANGELES = "America/Los_Angeles"  # UTC-8 in winter
SECOND = dt.timedelta(seconds=1)
FEBRUARY_2027 = Period(D(2027, 2, 1), D(2027, 2, 28))
JANUARY_2027 = Period(D(2027, 1, 1), D(2027, 1, 31))
DECEMBER_2026 = Period(D(2026, 12, 1), D(2026, 12, 31))


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.dates
@pytest.mark.parametrize("delay", [dt.timedelta(0), dt.timedelta(hours=48)])
def test_a_utc_plus_10_entity_closes_its_month_at_its_own_midnight(delay: dt.timedelta) -> None:
    # 1 March 00:00 in Brisbane is 14:00 UTC on 28 February: the month closes there, then the delay.
    month_end = utc("2027-02-28T14:00:00")
    assert FEBRUARY_2027.cutoff(delay, BRISBANE) == month_end + delay
    month = PeriodKind.MONTHLY
    assert latest_due(month, month_end + delay - SECOND, delay, BRISBANE) == JANUARY_2027
    assert latest_due(month, month_end + delay, delay, BRISBANE) == FEBRUARY_2027
    # The same instant in UTC is still 28 February: UTC's February is ten hours from closing.
    assert latest_due(month, month_end + delay, delay, "UTC") == JANUARY_2027
    assert latest_due(month, utc("2027-03-01T00:00:00") + delay, delay, "UTC") == FEBRUARY_2027


@pytest.mark.dates
@pytest.mark.parametrize("delay", [dt.timedelta(0), dt.timedelta(hours=48)])
def test_a_utc_minus_8_entity_closes_its_month_at_its_own_midnight(delay: dt.timedelta) -> None:
    # 1 February 00:00 in Los Angeles is 08:00 UTC that day, eight hours after UTC's month ends.
    month_end = utc("2027-02-01T08:00:00")
    assert JANUARY_2027.cutoff(delay, LOS_ANGELES) == month_end + delay
    month = PeriodKind.MONTHLY
    assert latest_due(month, month_end + delay - SECOND, delay, LOS_ANGELES) == DECEMBER_2026
    assert latest_due(month, month_end + delay, delay, LOS_ANGELES) == JANUARY_2027
    # UTC's January closed eight hours earlier.
    assert latest_due(month, month_end + delay - SECOND, delay, "UTC") == JANUARY_2027


@pytest.mark.dates
def test_cut_offs_follow_the_zones_daylight_saving_and_weeks_close_locally_too() -> None:
    # Los Angeles is on PDT (UTC-7) at the end of October 2027: midnight is 07:00 UTC.
    october = Period(D(2027, 10, 1), D(2027, 10, 31))
    assert october.cutoff(dt.timedelta(0), LOS_ANGELES) == utc("2027-11-01T07:00:00")
    # An ISO week in Brisbane ends at 14:00 UTC on its Sunday.
    week = period_containing(PeriodKind.WEEKLY, D(2027, 2, 24))
    assert week == Period(D(2027, 2, 22), D(2027, 2, 28))
    assert latest_due(PeriodKind.WEEKLY, utc("2027-02-28T14:00:00"), dt.timedelta(0), BRISBANE) == week
    assert due_since(PeriodKind.MONTHLY, utc("2027-02-28T14:00:00"), dt.timedelta(0), BRISBANE, None) == [
        FEBRUARY_2027
    ]


def test_a_scheduler_that_was_down_catches_up_on_every_missed_period_oldest_first() -> None:
    delay = dt.timedelta(hours=48)
    month = PeriodKind.MONTHLY
    # Last scheduled run: August. On 3 December September, October and November are due.
    assert due_since(month, at(3), delay, "UTC", D(2026, 8, 31)) == [
        Period(D(2026, 9, 1), D(2026, 9, 30)),
        Period(D(2026, 10, 1), D(2026, 10, 31)),
        Period(D(2026, 11, 1), D(2026, 11, 30)),
    ]
    # Up to date: only the latest, looked at again (its runs are made once).
    assert due_since(month, at(3), delay, "UTC", D(2026, 11, 30)) == [Period(D(2026, 11, 1), D(2026, 11, 30))]
    # Never scheduled before: no invented past.
    assert due_since(month, at(3), delay, "UTC", None) == [Period(D(2026, 11, 1), D(2026, 11, 30))]
    # Down for years: the latest twelve periods, oldest first.
    long_ago = due_since(PeriodKind.WEEKLY, at(3), delay, "UTC", D(2020, 1, 5))
    assert len(long_ago) == 12
    assert long_ago[-1] == Period(D(2026, 11, 23), D(2026, 11, 29))
    assert long_ago == sorted(long_ago)
    assert all(b.start - a.end == dt.timedelta(days=1) for a, b in itertools.pairwise(long_ago))


def test_the_lifecycle_moves_forward_only() -> None:
    lifecycle.check_approve("i", "DRAFT")
    for status in ("APPROVED", "POSTED", "VOID"):
        with pytest.raises(FailedPrecondition):
            lifecycle.check_approve("i", status)
    lifecycle.check_post("i", "APPROVED")
    lifecycle.check_post("i", "POSTED")  # asking again is harmless
    for status in ("DRAFT", "VOID"):
        with pytest.raises(FailedPrecondition):
            lifecycle.check_post("i", status)


def test_void_is_refused_once_posted_or_while_posting() -> None:
    lifecycle.check_void("i", "DRAFT", None)
    lifecycle.check_void("i", "APPROVED", "FAILED")
    with pytest.raises(FailedPrecondition, match="credit"):
        lifecycle.check_void("i", "POSTED", "CONFIRMED")
    with pytest.raises(FailedPrecondition) as queued:
        lifecycle.check_void("i", "APPROVED", "QUEUED")
    assert queued.value.reason == "POSTING_IN_PROGRESS"


def test_each_exception_kind_has_its_resolutions() -> None:
    assert (
        lifecycle.check_resolution("x", "CAP_EXCEEDED", "OPEN", "BILL_OVERAGE")
        == lifecycle.Resolution.BILL_OVERAGE
    )
    assert (
        lifecycle.check_resolution("x", "MISSING_FX", "OPEN", "WRITE_OFF") == lifecycle.Resolution.WRITE_OFF
    )
    assert lifecycle.check_resolution("x", "ERP_POST_FAILED", "OPEN", "RETRY") == lifecycle.Resolution.RETRY
    with pytest.raises(InvalidArgument) as wrong:
        lifecycle.check_resolution("x", "ERP_POST_FAILED", "OPEN", "WRITE_OFF")
    assert [(v.field, v.code) for v in wrong.value.violations] == [("resolution", "RESOLUTION_NOT_ALLOWED")]
    with pytest.raises(InvalidArgument):
        lifecycle.check_resolution("x", "MISSING_RATE", "OPEN", "BILL_OVERAGE")
    with pytest.raises(FailedPrecondition):
        lifecycle.check_resolution("x", "CAP_EXCEEDED", "RESOLVED", "WRITE_OFF")


def test_retries_back_off_exponentially_then_give_up() -> None:
    policy = RetryPolicy(
        max_attempts=4, first_delay=dt.timedelta(seconds=5), max_delay=dt.timedelta(seconds=15)
    )
    now = at(1)
    delays = [policy.next_attempt(n, now) for n in (1, 2, 3, 4)]
    assert delays == [
        now + dt.timedelta(seconds=5),
        now + dt.timedelta(seconds=10),
        now + dt.timedelta(seconds=15),
        None,
    ]
