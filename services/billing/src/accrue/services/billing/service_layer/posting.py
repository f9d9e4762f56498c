"""The posting job: approved invoices to the ERP, exactly once, with retries and a rate limit.

One job per invoice in `posting_jobs`. The ERP call (many round trips, each with its own
timeout) never runs inside a database transaction, so no row lock or connection is held while
the ERP thinks. A worker (any replica) goes through three steps:

1. **Claim**, one short transaction: the oldest due job (FOR UPDATE SKIP LOCKED) is leased to
   the worker (`leased_until` = now + the lease, which is longer than the ERP call may take)
   and the attempt is counted, then committed. Then a token from the rate limit every replica
   shares, and the invoice read as the ERP receives it.
2. **Call** the ERP, outside any transaction, bounded by `call_timeout` (shorter than the lease).
3. **Record**, one short transaction, only if the job is still QUEUED under this lease:
   * ERP confirms → the invoice gets the legal entity's next number (its counter row locked
     in this transaction, so numbers have no gaps), becomes POSTED, `billing.invoice.posted`
     goes into the outbox, and the job is CONFIRMED — one commit;
   * ERP unavailable, or anything else went wrong (a bug, a decode error, a timeout) → the
     attempt already counted stands and the job waits (exponential backoff) until it has
     failed `max_attempts` times; other due jobs go first meanwhile;
   * ERP refuses, or attempts run out → the job is FAILED and an ERP_POST_FAILED exception opens.
   A job claimed more often than `max_attempts` (each earlier worker died, or could not record
   its outcome) is failed the same way without calling the ERP again, so it cannot come back
   every lease for ever.

A worker that dies after the claim (even after the ERP confirmed) leaves a leased job: when the
lease runs out the job is due again and the next attempt asks the ERP, which finds the document
by our invoice id instead of making a second one. The number is only taken in step 3, so none
is skipped. A void while the job is QUEUED (leased or not) is refused (lifecycle.check_void,
POSTING_IN_PROGRESS), so an invoice cannot be voided while the ERP may be posting it; step 3
still re-reads the invoice and, should it not be APPROVED any more, records an
ERP_POST_FAILED exception for finance instead of numbering it. So a posting is never lost and
never done twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from accrue.billing.v1 import resources_pb2 as bl
from accrue.eventbus import Event
from accrue.events.v1 import billing_events_pb2 as bev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import parse_decimal
from accrue.runtime.clock import Clock
from accrue.services.billing.adapters.erp import (
    ErpAdapter,
    ErpError,
    ErpInvoice,
    ErpLine,
    ErpReceipt,
    ErpRejected,
    ErpUnavailable,
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


class AttemptsUnrecorded(Exception):
    """A job's attempts ran out without any of them recording an outcome."""


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
        call_timeout: float = 120.0,
        lease: dt.timedelta = dt.timedelta(minutes=5),
        clock: Clock,
    ) -> None:
        # The lease must outlast the rate-limit wait, the read and the whole ERP call, or a
        # second worker could claim the job while the first still talks to the ERP.
        if lease.total_seconds() <= call_timeout:
            raise ValueError(
                f"the posting lease ({lease}) must be longer than the ERP call timeout ({call_timeout} s)"
            )
        self._uow = uow_factory
        self._app = app
        self._erp = erp
        self._retry = retry or RetryPolicy()
        self._rate = max(rate_per_second, 0.001)
        self._burst = max(1.0, self._rate)
        self._poll = poll_interval
        self._call_timeout = call_timeout
        self._lease = lease
        self._clock = clock

    async def run(self) -> None:
        """Post whatever is due; sleep a little when nothing is."""
        while True:
            try:
                worked = await self.post_next()
                await self._gauges()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: a leased job waits for its lease to end
                log.warning("posting_worker_retry", error=repr(exc))
                worked = False
            if not worked:
                await asyncio.sleep(self._poll)

    async def post_next(self) -> bool:
        """Post one due job; False when none is due."""
        async with self._uow() as uow:
            job = await uow.billing.claim_posting_job(self._clock(), self._lease)
            await uow.commit()
        if job is None:
            return False
        if job.attempts > self._retry.max_attempts:
            # Every allowed attempt ended without an outcome (the worker died mid-post each time,
            # or recording the outcome failed): give up like an attempt that ran out, and let
            # finance decide (a retry from the exception queue asks the ERP again).
            unrecorded = AttemptsUnrecorded(
                f"{job.attempts - 1} attempt(s) ended without an outcome being recorded"
            )
            await self._record(job, lambda uow, head, now: self._failed(uow, job, head, unrecorded, now))
            return True
        try:
            await self._wait_for_token()
            document = await self._read(job)
            if document is None:
                return True
            receipt = await self._call(document)
        except Exception as exc:  # ErpError, a timeout, or a bug: counted, backed off, never a stall
            error = exc
            await self._record(job, lambda uow, head, now: self._failed(uow, job, head, error, now))
            return True
        await self._record(job, lambda uow, head, now: self._confirmed(uow, job, head, receipt, now))
        return True

    async def _call(self, document: ErpInvoice) -> ErpReceipt:
        """Step 2: the ERP call, with no transaction open, cut off before the lease can run out."""
        try:
            async with asyncio.timeout(self._call_timeout):
                return await self._erp.post_invoice(document)
        except TimeoutError as exc:
            raise ErpUnavailable(
                f"{self._erp.system} did not answer within {self._call_timeout:g} s"
            ) from exc

    async def _wait_for_token(self) -> None:
        """Take a token from the bucket every replica shares (its own short transaction)."""
        while True:
            async with self._uow() as uow:
                wait = await uow.billing.take_token(RATE_LIMIT, self._rate, self._burst)
                await uow.commit()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _read(self, job: PostingJob) -> ErpInvoice | None:
        """The invoice as the ERP receives it; None (and the job closed) when it is not APPROVED."""
        async with self._uow() as uow:
            head = await uow.billing.invoice_for_update(job.invoice_id)
            if head is not None and head.status == "APPROVED":
                return await self._document(uow, head)
            # Posted by an earlier attempt whose job update was lost, or voided: nothing to send.
            if await uow.billing.holds_lease(job):
                status = "CONFIRMED" if head is not None and head.status == "POSTED" else "FAILED"
                await uow.billing.set_posting(
                    job.invoice_id, status=status, leased_until=None, update_time=self._clock()
                )
                await uow.commit()
            return None

    async def _record(
        self, job: PostingJob, outcome: Callable[[BillingUnitOfWork, Any, dt.datetime], Awaitable[None]]
    ) -> None:
        """Step 3: record the outcome in one transaction, if the job is still ours."""
        async with self._uow() as uow:
            if not await uow.billing.holds_lease(job):
                # The lease ran out and another worker claimed the job: it finishes it (the ERP
                # finds the document by our invoice id), so this outcome is dropped.
                log.warning("posting_lease_lost", invoice_id=job.invoice_id, attempts=job.attempts)
                return
            head = await uow.billing.invoice_for_update(job.invoice_id)
            await outcome(uow, head, self._clock())
            await uow.commit()

    async def _confirmed(
        self, uow: BillingUnitOfWork, job: PostingJob, head: Any, receipt: ErpReceipt, now: dt.datetime
    ) -> None:
        if head is None or head.status != "APPROVED":
            # Cannot happen while voids are refused for a QUEUED job; should it anyway, finance
            # must learn that the ERP holds a document for an invoice we will not number.
            status = head.status if head is not None else "gone"
            await self._failed(
                uow,
                job,
                head,
                ErpRejected(f"the ERP holds document {receipt.document_id} but the invoice is {status}"),
                now,
            )
            return
        legal_entity_id = head.legal_entity_id
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
            job.invoice_id, status="CONFIRMED", leased_until=None, last_error="", update_time=now
        )
        failed = await uow.billing.open_exceptions_for_invoice(job.invoice_id)
        await self._app.close_exceptions(
            uow, failed, Resolution.SUPERSEDED, "billing", "the ERP confirmed the invoice", now
        )
        (invoice,) = await uow.billing.invoices([job.invoice_id])
        uow.events.add(
            Event(
                "billing.invoice.posted", legal_entity_id, bev.InvoicePosted(invoice=invoice), occurred_at=now
            )
        )
        POSTS.labels(self._erp.system, "confirmed").inc()
        log.info(
            "invoice_posted",
            invoice_id=job.invoice_id,
            number=invoice.number,
            erp=self._erp.system,
            erp_document_id=receipt.document_id,
        )

    async def _failed(
        self, uow: BillingUnitOfWork, job: PostingJob, head: Any, exc: Exception, now: dt.datetime
    ) -> None:
        attempts = job.attempts  # counted when the job was claimed
        retry_at = None if isinstance(exc, ErpRejected) else self._retry.next_attempt(attempts, now)
        # An ERP error speaks for itself; anything else (a bug, a timeout) is named by its type.
        error = (str(exc) if isinstance(exc, ErpError) else f"{type(exc).__name__}: {exc}")[:2000]
        if retry_at is not None:
            await uow.billing.set_posting(
                job.invoice_id,
                leased_until=None,
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
            job.invoice_id, status="FAILED", leased_until=None, last_error=error, update_time=now
        )
        total = Decimal(head.total) if head is not None else None
        await self._app.raise_exceptions(
            uow,
            [
                ExceptionDraft(
                    "ERP_POST_FAILED",
                    job.legal_entity_id,
                    f"{self._erp.system} did not take the invoice after {attempts} attempt(s): {error}",
                    (),
                    Decimal(0),
                    contract_id=head.contract_id if head is not None else "",
                    amount=total,
                    currency=head.currency if head is not None else "",
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
