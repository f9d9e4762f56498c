"""The posting job: approved invoices to the ERP, exactly once, with retries and a rate limit.

One job per invoice in `posting_jobs`. A worker (any replica) claims the oldest due job with
FOR UPDATE SKIP LOCKED and keeps it locked while it talks to the ERP, inside one transaction:

* ERP confirms → the invoice gets the legal entity's next number (its counter row locked in
  the same transaction, so numbers have no gaps), becomes POSTED, and `billing.invoice.posted`
  goes into the outbox — all in the commit that also closes the job;
* ERP unavailable → the attempt is counted and the job waits (exponential backoff), until it has
  failed `max_attempts` times;
* ERP refuses, or attempts run out → the job is FAILED and an ERP_POST_FAILED exception opens.

A crash anywhere rolls the transaction back: the job is QUEUED again and the next attempt asks
the ERP, which finds the document by our invoice id rather than making a second one. So a
posting is never lost and never done twice. A token bucket in the database spaces ERP calls
across every replica.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from accrue.billing.v1 import resources_pb2 as bl
from accrue.eventbus import Event
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import parse_decimal
from accrue.services.billing.adapters.erp import (
    ErpAdapter,
    ErpError,
    ErpInvoice,
    ErpLine,
    ErpReceipt,
    ErpRejected,
)
from accrue.services.billing.adapters.repository import ExceptionDraft, PostingJob
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.lifecycle import Resolution
from accrue.services.billing.domain.posting import RetryPolicy
from accrue.services.billing.service_layer.handlers import Billing
from accrue.telemetry import get_logger

log = get_logger(__name__)

POSTS = Counter(
    "accrue_billing_erp_posts_total",
    "ERP posting attempts by outcome (confirmed, retry, failed).",
    ["system", "outcome"],
)
JOBS = Gauge("accrue_billing_posting_jobs", "Posting jobs by status.", ["status"])

RATE_LIMIT = "erp"


class PostingWorker:
    """Runs due posting jobs until cancelled."""

    def __init__(
        self,
        uow_factory: Callable[[], BillingUnitOfWork],
        app: Billing,
        erp: ErpAdapter,
        *,
        retry: RetryPolicy | None = None,
        rate_per_second: float = 5.0,
        poll_interval: float = 1.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow_factory
        self._app = app
        self._erp = erp
        self._retry = retry or RetryPolicy()
        self._rate = max(rate_per_second, 0.001)
        self._burst = max(1.0, self._rate)
        self._poll = poll_interval
        self._clock = clock

    async def run(self) -> None:
        """Post whatever is due; sleep a little when nothing is."""
        while True:
            try:
                worked = await self.post_next()
                await self._gauges()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or the database away: the job is still QUEUED
                log.warning("posting_worker_retry", error=repr(exc))
                worked = False
            if not worked:
                await asyncio.sleep(self._poll)

    async def post_next(self) -> bool:
        """Post one due job; False when none is due."""
        async with self._uow() as uow:
            job = await uow.billing.claim_posting_job(self._clock())
            if job is None:
                return False
            await self._wait_for_token()
            head = await uow.billing.invoice_for_update(job.invoice_id)
            now = self._clock()
            if head is None or head.status != "APPROVED":
                # Posted by an earlier attempt whose job update was lost, or voided: nothing to send.
                status = "CONFIRMED" if head is not None and head.status == "POSTED" else "FAILED"
                await uow.billing.set_posting(job.invoice_id, status=status, update_time=now)
                await uow.commit()
                return True
            document = await self._document(uow, head)
            try:
                receipt = await self._erp.post_invoice(document)
            except ErpError as exc:
                await self._failed(uow, job, head.legal_entity_id, exc, now)
                await uow.commit()
                return True
            await self._confirmed(uow, job, head.legal_entity_id, receipt, now)
            await uow.commit()
        return True

    async def _wait_for_token(self) -> None:
        """Take a token from the bucket every replica shares (its own short transaction)."""
        while True:
            async with self._uow() as uow:
                wait = await uow.billing.take_token(RATE_LIMIT, self._rate, self._burst)
                await uow.commit()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _confirmed(
        self,
        uow: BillingUnitOfWork,
        job: PostingJob,
        legal_entity_id: str,
        receipt: ErpReceipt,
        now: dt.datetime,
    ) -> None:
        number = await uow.billing.next_number(legal_entity_id)
        await uow.billing.set_invoice(
            job.invoice_id,
            status="POSTED",
            number=f"{number:06d}",
            erp_document_id=receipt.document_id,
            erp_number=receipt.number,
            post_time=now,
            update_time=now,
        )
        await uow.billing.set_posting(
            job.invoice_id, status="CONFIRMED", attempts=job.attempts + 1, last_error="", update_time=now
        )
        failed = await uow.billing.open_exceptions_for_invoice(job.invoice_id)
        await self._app.close_exceptions(
            uow, failed, Resolution.SUPERSEDED, "billing", "the ERP confirmed the invoice", now
        )
        (invoice,) = await uow.billing.invoices([job.invoice_id])
        uow.events.add(Event("billing.invoice.posted", legal_entity_id, bev.InvoicePosted(invoice=invoice)))
        POSTS.labels(self._erp.system, "confirmed").inc()
        log.info(
            "invoice_posted",
            invoice_id=job.invoice_id,
            number=invoice.number,
            erp=self._erp.system,
            erp_document_id=receipt.document_id,
        )

    async def _failed(
        self, uow: BillingUnitOfWork, job: PostingJob, legal_entity_id: str, exc: ErpError, now: dt.datetime
    ) -> None:
        attempts = job.attempts + 1
        retry_at = None if isinstance(exc, ErpRejected) else self._retry.next_attempt(attempts, now)
        error = str(exc)[:2000]
        if retry_at is not None:
            await uow.billing.set_posting(
                job.invoice_id,
                attempts=attempts,
                next_attempt_time=retry_at,
                last_error=error,
                update_time=now,
            )
            POSTS.labels(self._erp.system, "retry").inc()
            log.warning(
                "invoice_post_retry",
                invoice_id=job.invoice_id,
                attempts=attempts,
                retry_at=retry_at.isoformat(),
                error=error,
            )
            return
        await uow.billing.set_posting(
            job.invoice_id, status="FAILED", attempts=attempts, last_error=error, update_time=now
        )
        head = await uow.billing.invoice_for_update(job.invoice_id)
        total = Decimal(head.total) if head is not None else None
        currency = head.currency if head is not None else ""
        await self._app.raise_exceptions(
            uow,
            [
                ExceptionDraft(
                    "ERP_POST_FAILED",
                    legal_entity_id,
                    f"{self._erp.system} did not take the invoice after {attempts} attempt(s): {error}",
                    (),
                    Decimal(0),
                    contract_id=head.contract_id if head is not None else "",
                    amount=total,
                    currency=currency,
                    invoice_id=job.invoice_id,
                )
            ],
            None,
            now,
        )
        POSTS.labels(self._erp.system, "failed").inc()
        log.error("invoice_post_failed", invoice_id=job.invoice_id, attempts=attempts, error=error)

    async def _document(self, uow: BillingUnitOfWork, head: Any) -> ErpInvoice:
        """The invoice as the ERP receives it, with the customer and legal entity named."""
        (invoice,) = await uow.billing.invoices([head.id])
        records = await uow.masterdata.records(uow.connection, "customer", [invoice.customer_id])
        customer = records.get(invoice.customer_id)
        entities = await uow.masterdata.records(uow.connection, "legal_entity", [invoice.legal_entity_id])
        entity = entities.get(invoice.legal_entity_id)
        return ErpInvoice(
            reference=invoice.id,
            legal_entity_id=invoice.legal_entity_id,
            legal_entity_code=entity.code if isinstance(entity, md.LegalEntity) else "",
            customer_id=invoice.customer_id,
            customer_code=customer.code if isinstance(customer, md.Customer) else "",
            customer_name=customer.name if isinstance(customer, md.Customer) else "",
            currency=invoice.currency,
            invoice_date=dt.date.fromisoformat(invoice.period_end),
            period_start=dt.date.fromisoformat(invoice.period_start),
            period_end=dt.date.fromisoformat(invoice.period_end),
            lines=tuple(
                ErpLine(
                    kind=str(bl.InvoiceLineKind.Name(line.kind)).removeprefix("INVOICE_LINE_KIND_"),
                    description=line.description,
                    quantity=parse_decimal(line.quantity),
                    unit_price=parse_decimal(line.unit_price),
                    amount=parse_decimal(line.amount),
                    tax_code=line.tax_code,
                    tax_rate=parse_decimal(line.tax_rate),
                    tax_amount=parse_decimal(line.tax_amount),
                )
                for line in invoice.lines
            ),
            subtotal=parse_decimal(invoice.subtotal),
            tax_total=parse_decimal(invoice.tax_total),
            total=parse_decimal(invoice.total),
        )

    async def _gauges(self) -> None:
        async with self._uow() as uow:
            counts = await uow.billing.posting_counts()
        for status in ("QUEUED", "CONFIRMED", "FAILED"):
            JOBS.labels(status).set(counts.get(status, 0))
