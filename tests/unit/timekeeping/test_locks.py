"""Period locks: the latest lock in force holds; reopening keeps who, when and why."""

import datetime as dt

import pytest

from accrue.runtime import FailedPrecondition
from accrue.services.timekeeping.domain.locks import PeriodLock, locked_through

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
D = dt.date


def lock(lock_id: str, through: dt.date) -> PeriodLock:
    return PeriodLock(lock_id, "le1", through, "month end", "controller", NOW)


def test_the_latest_lock_in_force_is_what_holds() -> None:
    september, october = lock("l1", D(2026, 9, 30)), lock("l2", D(2026, 10, 31))
    assert locked_through([september, october]) == D(2026, 10, 31)
    october.reopen("controller", "late timesheets", NOW, latest_active_id="l2")
    assert locked_through([september, october]) == D(2026, 9, 30)
    assert locked_through([]) is None


def test_reopening_keeps_who_when_and_why() -> None:
    october = lock("l2", D(2026, 10, 31))
    october.reopen("controller", "late timesheets", NOW, latest_active_id="l2")
    assert (october.active, october.reopened_by_id, october.reopen_reason, october.reopen_time) == (
        False,
        "controller",
        "late timesheets",
        NOW,
    )
    with pytest.raises(FailedPrecondition) as twice:
        october.reopen("controller", "again", NOW, latest_active_id=None)
    assert twice.value.reason == "ALREADY_REOPENED"


def test_only_the_latest_lock_in_force_may_be_reopened() -> None:
    september = lock("l1", D(2026, 9, 30))
    with pytest.raises(FailedPrecondition) as refused:
        september.reopen("controller", "why not", NOW, latest_active_id="l2")
    assert refused.value.reason == "NOT_LATEST_LOCK"
    assert september.active
