"""Time entries and their life: submitted, validated, routed, approved, declined, reversed.

Pure Python: no database, no gRPC. The rules for what makes an entry valid are in `rules.py`;
who may decide is in `approval.py`; this module holds the entry itself and the transitions it
allows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

from accrue.runtime import FailedPrecondition, PermissionDenied, Violation


class Status(StrEnum):
    """Where an entry is in the workflow (the contract's TimeEntryStatus without its prefix)."""

    REJECTED = "REJECTED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    REVERSED = "REVERSED"


@dataclass(frozen=True, slots=True)
class Submission:
    """What a consultant submits, parsed: the fields that identify the work."""

    consultant_id: str
    project_id: str
    work_date: dt.date
    hours: Decimal
    labor_category_id: str | None
    billable: bool | None
    notes: str
    external_ref: tuple[str, str] | None

    def fingerprint(self) -> str:
        """Same content, same fingerprint: how a resubmission by external_ref is recognised."""
        parts = (
            self.consultant_id,
            self.project_id,
            self.work_date.isoformat(),
            format(self.hours.normalize(), "f"),
            self.labor_category_id or "",
            "" if self.billable is None else str(self.billable),
            self.notes,
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(slots=True)
class TimeEntry:
    """A submitted entry with the facts validation resolved from master data."""

    id: str
    submission: Submission
    status: Status
    violations: list[Violation] = field(default_factory=list)
    labor_category_id: str = ""
    billable: bool = True
    approver_id: str = ""
    legal_entity_id: str = ""
    customer_id: str = ""
    rate: Decimal | None = None
    rate_currency: str = ""
    approve_time: dt.datetime | None = None
    decline_reason: str = ""
    invoice_id: str = ""
    reverses_id: str = ""
    reversed_by_id: str = ""
    replaces_id: str = ""
    reversal_reason: str = ""
    escalation_level: int = 0
    likely_duplicate_of_id: str = ""
    decided_by_id: str = ""
    # When the entry entered its current approver's queue; the approval SLA runs from here.
    queue_time: dt.datetime | None = None
    # When it escalates if still waiting: queue_time plus the SLA in working hours (internal).
    escalation_due_time: dt.datetime | None = None
    # When escalation last found nobody above the approver (internal).
    escalation_checked_time: dt.datetime | None = None
    version: int = 1
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    @property
    def is_reversal(self) -> bool:
        """True for the negative entry that cancels another."""
        return bool(self.reverses_id)

    def approve(self, actor_id: str, at: dt.datetime, acting_for: Collection[str] = ()) -> bool:
        """Approve as the resolved approver or their delegate; False when it already was."""
        self._authorize(actor_id, acting_for)
        if self.status is Status.APPROVED:
            return False
        self._require_pending("approved")
        self.status = Status.APPROVED
        self.approve_time = at
        self.decided_by_id = actor_id
        self.queue_time = None
        self.escalation_due_time = None
        return True

    def decline(self, actor_id: str, reason: str, acting_for: Collection[str] = ()) -> bool:
        """Decline as the resolved approver or their delegate, with a reason; False when it already was."""
        self._authorize(actor_id, acting_for)
        if self.status is Status.DECLINED:
            return False
        self._require_pending("declined")
        self.status = Status.DECLINED
        self.decline_reason = reason
        self.decided_by_id = actor_id
        self.queue_time = None
        self.escalation_due_time = None
        return True

    def reverse(
        self,
        actor_id: str,
        reason: str,
        reversal_id: str,
        at: dt.datetime,
        acting_for: Collection[str] = (),
        *,
        any_approver: bool = False,
    ) -> TimeEntry:
        """Cancel approved time with a linked negative entry; the entry itself is never edited.

        The approver of record (or their delegate) may reverse, and with any_approver (finance)
        anyone: it takes approved hours away, which is an approval decision, so never the
        consultant who recorded the time. An invoiced entry may be reversed too; billing turns
        the reversal into a credit.
        """
        self._authorize(actor_id, acting_for, any_approver=any_approver)
        if self.is_reversal:
            raise FailedPrecondition(
                f"entry {self.id} is itself a reversal (of {self.reverses_id}); it cannot be reversed",
                reason="IS_REVERSAL",
            )
        if self.status is Status.REVERSED:
            raise FailedPrecondition(
                f"entry {self.id} was already reversed by {self.reversed_by_id}", reason="ALREADY_REVERSED"
            )
        if self.status is not Status.APPROVED:
            raise FailedPrecondition(
                f"only an approved entry can be reversed; this one is {self.status}", reason="NOT_APPROVED"
            )
        reversal = TimeEntry(
            id=reversal_id,
            # Same consultant, project, role and day, negative hours: billing credits exactly
            # what was approved. No external_ref: the reference stays with the original.
            submission=replace(
                self.submission,
                hours=-self.submission.hours,
                external_ref=None,
                notes=f"Reversal of {self.id}: {reason}",
            ),
            status=Status.APPROVED,
            labor_category_id=self.labor_category_id,
            billable=self.billable,
            approver_id=self.approver_id,
            legal_entity_id=self.legal_entity_id,
            customer_id=self.customer_id,
            rate=self.rate,
            rate_currency=self.rate_currency,
            approve_time=at,
            reverses_id=self.id,
            reversal_reason=reason,
            decided_by_id=actor_id,
            create_time=at,
            update_time=at,
        )
        self.status = Status.REVERSED
        self.reversed_by_id = reversal_id
        self.reversal_reason = reason
        return reversal

    def escalate(self, next_approver_id: str, at: dt.datetime, due: dt.datetime) -> str:
        """Move a pending entry to the next level's queue, due again at `due`; returns the
        previous approver."""
        self._require_pending("escalated")
        previous = self.approver_id
        self.approver_id = next_approver_id
        self.escalation_level += 1
        self.queue_time = at
        self.escalation_due_time = due
        return previous

    def _require_pending(self, verb: str) -> None:
        if self.status is not Status.PENDING_APPROVAL:
            raise FailedPrecondition(
                f"only an entry pending approval can be {verb}; this one is {self.status}",
                reason="NOT_PENDING",
            )

    def _authorize(self, actor_id: str, acting_for: Collection[str], *, any_approver: bool = False) -> None:
        """The approver of record, or a delegate acting for them (or, with any_approver, anyone);
        never the consultant themselves (segregation of duties)."""
        if self.status is Status.REJECTED:
            # Never routed, so nobody is its approver: say what is wrong with it instead.
            raise FailedPrecondition(
                "a rejected entry was never routed for approval; correct and resubmit it",
                reason="NOT_PENDING",
            )
        if actor_id and actor_id == self.submission.consultant_id:
            raise PermissionDenied(
                f"{actor_id} recorded this time and cannot decide on it", reason="SELF_APPROVAL"
            )
        if not any_approver and actor_id != self.approver_id and self.approver_id not in acting_for:
            raise PermissionDenied(
                f"{actor_id or 'an unnamed caller'} is not the approver of this entry "
                f"({self.approver_id}) nor their delegate",
                reason="NOT_APPROVER",
            )
