"""Time entries and their life: submitted, validated, routed, approved or declined.

Pure Python: no database, no gRPC. The rules for what makes an entry valid are in `rules.py`;
this module holds the entry itself and the transitions it allows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
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


@dataclass
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
    version: int = 1
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None

    def approve(self, approver_id: str, at: dt.datetime) -> bool:
        """Approve as the resolved approver; False when it already was (nothing to do)."""
        self._check_approver(approver_id)
        if self.status is Status.APPROVED:
            return False
        if self.status is not Status.PENDING_APPROVAL:
            raise FailedPrecondition(
                f"only an entry pending approval can be approved; this one is {self.status}",
                reason="NOT_PENDING",
            )
        self.status = Status.APPROVED
        self.approve_time = at
        return True

    def decline(self, approver_id: str, reason: str) -> bool:
        """Decline as the resolved approver, with a reason; False when it already was."""
        self._check_approver(approver_id)
        if self.status is Status.DECLINED:
            return False
        if self.status is not Status.PENDING_APPROVAL:
            raise FailedPrecondition(
                f"only an entry pending approval can be declined; this one is {self.status}",
                reason="NOT_PENDING",
            )
        self.status = Status.DECLINED
        self.decline_reason = reason
        return True

    def _check_approver(self, approver_id: str) -> None:
        if approver_id != self.approver_id:
            raise PermissionDenied(
                f"{approver_id or 'an unnamed caller'} is not the approver of this entry",
                reason="NOT_APPROVER",
            )
