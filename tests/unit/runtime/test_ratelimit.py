"""The token bucket: a burst at once, then the rate, on the injected clock."""

import datetime as dt

import pytest

from accrue.runtime.clock import FixedClock
from accrue.runtime.ratelimit import TokenBucket

pytestmark = pytest.mark.unit


def test_a_burst_then_the_rate() -> None:
    clock = FixedClock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    bucket = TokenBucket(rate=2, burst=3, clock=clock)

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(dt.timedelta(milliseconds=500))
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.advance(dt.timedelta(hours=1))  # never more than the burst saved up
    assert sum(bucket.take() for _ in range(10)) == 3


def test_a_clock_that_steps_back_grants_nothing_extra() -> None:
    clock = FixedClock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    clock.advance(dt.timedelta(seconds=-10))
    assert not bucket.take()


def test_nonsense_limits_are_refused() -> None:
    clock = FixedClock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1, clock=clock)
