"""When a failed posting is tried again, and when it is given up."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts, capped; give up after max_attempts."""

    max_attempts: int = 8
    first_delay: dt.timedelta = dt.timedelta(seconds=5)
    max_delay: dt.timedelta = dt.timedelta(minutes=30)

    def next_attempt(self, attempts: int, now: dt.datetime) -> dt.datetime | None:
        """When to try again after `attempts` failures, or None to give up."""
        if attempts >= self.max_attempts:
            return None
        delay = min(self.first_delay * (1 << min(max(attempts - 1, 0), 30)), self.max_delay)
        return now + delay
