"""Who decides on time besides the resolved approver: delegates, and the next level up.

The resolved approver (rules.resolve_approver) is the project manager, or the consultant's line
manager when the consultant manages the project. Two things widen that:

* a delegation lets another consultant act for an approver on the days it covers (leave,
  absence); the approver keeps their own authority;
* an entry that waits longer than the approval SLA escalates to the approver's line manager,
  one level at a time, with an event each time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from accrue.runtime import PermissionDenied, Violation


@dataclass
class Delegation:
    """An approver lets a delegate act for them from start_date to end_date: inclusive, days in
    the delegator's time zone (their own, else their legal entity's)."""

    id: str
    delegator_id: str
    delegate_id: str
    start_date: dt.date
    end_date: dt.date
    reason: str
    create_time: dt.datetime
    revoked_by_id: str = ""
    revoke_time: dt.datetime | None = None
    # The delegator's legal entity (who may read the delegation: domain.access).
    legal_entity_id: str = ""

    @property
    def revoked(self) -> bool:
        """True once revoked."""
        return self.revoke_time is not None

    def active_on(self, day: dt.date) -> bool:
        """True when the delegate may act on day."""
        return not self.revoked and self.start_date <= day <= self.end_date

    def revoke(self, actor_id: str, at: dt.datetime) -> bool:
        """End the delegation (only the delegator may); False when it already was."""
        if actor_id != self.delegator_id:
            raise PermissionDenied(
                f"only the delegator ({self.delegator_id}) may revoke this delegation", reason="NOT_DELEGATOR"
            )
        if self.revoked:
            return False
        self.revoked_by_id = actor_id
        self.revoke_time = at
        return True


def check_delegation(
    delegator_id: str, delegate_id: str, start: dt.date | None, end: dt.date | None, today: dt.date
) -> list[Violation]:
    """What is wrong with a new delegation, every problem at once (ids and dates already parsed;
    today is the delegator's)."""
    found: list[Violation] = []
    if delegator_id and delegator_id == delegate_id:
        found.append(Violation("delegate_id", "SELF_DELEGATION", "an approver cannot delegate to themselves"))
    if start is not None and end is not None:
        if end < start:
            found.append(
                Violation("end_date", "INVALID_RANGE", f"end_date ({end}) is before start_date ({start})")
            )
        elif end < today:
            found.append(Violation("end_date", "IN_THE_PAST", f"end_date ({end}) has already passed"))
    return found


def escalation_target(approver_id: str, consultant_id: str, managers_above: Sequence[str]) -> str | None:
    """The next level for an entry: the first manager above the approver who may approve it.

    managers_above is the approver's line manager, then theirs, and so on. The consultant who
    recorded the time is skipped (nobody approves their own time), and so is anyone already met
    (a cycle in the reporting lines). None when there is no one above.
    """
    seen = {approver_id}
    for manager in managers_above:
        if not manager or manager in seen:
            return None
        if manager != consultant_id:
            return manager
        seen.add(manager)
    return None
