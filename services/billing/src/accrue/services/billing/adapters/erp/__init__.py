"""Posting invoices to an ERP: the interface every adapter implements, and the documents.

Our invoice id is the ERP's reference for the document. An adapter must make
`post_invoice` idempotent by that reference: a retry after a lost response finds the
document it already made (and finishes posting it) instead of creating a second one.

Errors say whether a retry can help: `ErpUnavailable` (network, timeouts, the ERP down or
overloaded) is retried with backoff; `ErpRejected` (the ERP refused the document) is not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ErpLine:
    """One invoice line as the ERP receives it: our rounded figures, never recomputed."""

    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    tax_code: str
    tax_rate: Decimal
    tax_amount: Decimal


@dataclass(frozen=True)
class ErpInvoice:
    """A customer invoice (or, with a negative total, a credit note) to post."""

    reference: str  # our invoice id
    legal_entity_id: str
    legal_entity_code: str
    customer_id: str
    customer_code: str
    customer_name: str
    currency: str
    invoice_date: dt.date
    period_start: dt.date
    period_end: dt.date
    lines: tuple[ErpLine, ...]
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal


@dataclass(frozen=True)
class ErpReceipt:
    """The ERP's confirmation: its document id and its own number for the document."""

    document_id: str
    number: str


class ErpError(Exception):
    """The ERP did not confirm the document."""


class ErpUnavailable(ErpError):
    """A transient failure: try again later."""


class ErpRejected(ErpError):
    """The ERP refused the document: retrying the same document will not help."""


class ErpAdapter(Protocol):
    """What billing needs from an ERP."""

    @property
    def system(self) -> str:
        """A short name, e.g. "tryton" or "file"."""
        ...

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        """Create and post the document, or finish/confirm the one already made for it."""
        ...

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        """The posted document for our invoice id, if the ERP holds one."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
