"""A token bucket on the injected clock: how often something may happen, in one place.

Used where a caller could make Accrue do work by failing on purpose (each refused request
writes an audit record): beyond the rate, the work is counted instead of done.
"""

from __future__ import annotations

from accrue.runtime.clock import Clock


class TokenBucket:
    """At most `burst` at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least one")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """True (and one token fewer) if one is left; False when the rate is exceeded."""
        now = self._clock()
        elapsed = max((now - self._at).total_seconds(), 0.0)
        self._at = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
