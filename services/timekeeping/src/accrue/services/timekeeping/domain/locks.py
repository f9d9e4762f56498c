"""Period locks: a legal entity's time closed up to a date, and reopened only with a reason.

A lock covers every consultant the legal entity employs at once. New time, reversals and
replacements dated on or before the latest lock still in force are refused (PERIOD_LOCKED);
approving or declining time already submitted is not a change to the time and stays allowed.
Reopening keeps who, when and why on the lock itself, so the list of locks is the audit trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from accrue.runtime import FailedPrecondition


@dataclass
class PeriodLock:
    """A legal entity's time is closed up to and including locked_through, until reopened."""

    id: str
    legal_entity_id: str
    locked_through: dt.date
    reason: str
    locked_by_id: str
    create_time: dt.datetime
    reopened_by_id: str = ""
    reopen_reason: str = ""
    reopen_time: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """True while the lock holds."""
        return self.reopen_time is None

    def reopen(self, actor_id: str, reason: str, at: dt.datetime, latest_active_id: str | None) -> None:
        """Reopen with who, when and why kept; only the legal entity's latest lock still in force.

        Reopening an older lock while a later one holds would change nothing and leave a
        misleading audit trail, so it is refused.
        """
        if not self.active:
            raise FailedPrecondition(
                f"period lock {self.id} was already reopened at {self.reopen_time}", reason="ALREADY_REOPENED"
            )
        if latest_active_id != self.id:
            raise FailedPrecondition(
                f"period lock {latest_active_id} is later and still holds; reopen it first",
                reason="NOT_LATEST_LOCK",
            )
        self.reopened_by_id = actor_id
        self.reopen_reason = reason
        self.reopen_time = at


def locked_through(locks: Iterable[PeriodLock]) -> dt.date | None:
    """The last locked day: the latest lock still in force, or None."""
    days = [lock.locked_through for lock in locks if lock.active]
    return max(days) if days else None
