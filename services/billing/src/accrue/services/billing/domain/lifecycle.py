"""An invoice's life and what finance may do with an exception: the rules, nothing else.

    DRAFT ──approve──► APPROVED ──post (ERP confirms)──► POSTED
      └──────void─────────┴──────► VOID

A POSTED invoice never changes (the database refuses it too); corrections are CREDIT lines on
a later invoice. Voiding is possible until posting has been asked for; an invoice whose
posting failed for good may be voided once the ERP is known not to hold it.
"""

from __future__ import annotations

from enum import StrEnum

from accrue.runtime import FailedPrecondition, InvalidArgument, Violation


class InvoiceStatus(StrEnum):
    """Where an invoice is in its life."""

    DRAFT = "DRAFT"
    APPROVED = "APPROVED"
    POSTED = "POSTED"
    VOID = "VOID"


class PostingStatus(StrEnum):
    """Where an invoice's posting job is."""

    QUEUED = "QUEUED"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


class Resolution(StrEnum):
    """What was done about an exception."""

    BILL_OVERAGE = "BILL_OVERAGE"
    WRITE_OFF = "WRITE_OFF"
    RETRY = "RETRY"
    SUPERSEDED = "SUPERSEDED"


# Exceptions about work that could not be priced; their entries (or milestones) wait unbilled.
WORK_KINDS = frozenset({"CAP_EXCEEDED", "MISSING_RATE", "MISSING_FX", "MISSING_CONTRACT", "MISSING_TAX_RATE"})

_ALLOWED: dict[str, frozenset[Resolution]] = {
    "CAP_EXCEEDED": frozenset({Resolution.BILL_OVERAGE, Resolution.WRITE_OFF, Resolution.RETRY}),
    "ERP_POST_FAILED": frozenset({Resolution.RETRY}),
    **{kind: frozenset({Resolution.WRITE_OFF, Resolution.RETRY}) for kind in WORK_KINDS - {"CAP_EXCEEDED"}},
}


def check_approve(invoice_id: str, status: str) -> None:
    """Only a draft can be approved."""
    if status != InvoiceStatus.DRAFT:
        raise FailedPrecondition(
            f"invoice {invoice_id} is {status}; only a DRAFT can be approved", reason="NOT_DRAFT"
        )


def check_post(invoice_id: str, status: str) -> None:
    """Only an approved invoice can be posted (asking again for a posted one is harmless)."""
    if status not in (InvoiceStatus.APPROVED, InvoiceStatus.POSTED):
        raise FailedPrecondition(
            f"invoice {invoice_id} is {status}; approve it before posting", reason="NOT_APPROVED"
        )


def check_void(invoice_id: str, status: str, posting: str | None) -> None:
    """Drafts and approved invoices can be voided, unless a posting is under way."""
    if status not in (InvoiceStatus.DRAFT, InvoiceStatus.APPROVED):
        raise FailedPrecondition(
            f"invoice {invoice_id} is {status}; only DRAFT or APPROVED invoices can be voided"
            + ("; correct a posted invoice with a credit" if status == InvoiceStatus.POSTED else ""),
            reason="NOT_VOIDABLE",
        )
    if posting == PostingStatus.QUEUED:
        raise FailedPrecondition(
            f"invoice {invoice_id} is being posted to the ERP; it can be voided only if posting fails",
            reason="POSTING_IN_PROGRESS",
        )


def check_resolution(exception_id: str, kind: str, status: str, resolution: str) -> Resolution:
    """The resolution finance asked for, if it fits the exception."""
    if status != "OPEN":
        raise FailedPrecondition(f"exception {exception_id} is already {status}", reason="NOT_OPEN")
    allowed = _ALLOWED.get(kind, frozenset())
    if resolution not in {r.value for r in allowed}:
        names = ", ".join(sorted(r.value for r in allowed)) or "none"
        raise InvalidArgument(
            f"{resolution or 'no resolution'} does not resolve a {kind} exception",
            [
                Violation(
                    "resolution",
                    "RESOLUTION_NOT_ALLOWED",
                    f"a {kind} exception is resolved with one of: {names}",
                )
            ],
        )
    return Resolution(resolution)
