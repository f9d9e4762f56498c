"""Observability use cases: keep the ledger from events, compute KPIs, reconcile, export metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accrue.billing.v1 import resources_pb2 as bl
from accrue.eventbus import Event
from accrue.events.v1 import observability_events_pb2 as oev
from accrue.money import parse_decimal
from accrue.runtime import audit
from accrue.runtime.clock import UTC_ZONE, Clock
from accrue.runtime.identity import current_principal
from accrue.runtime.validation import Violations
from accrue.services.observability.adapters.jetstream import Backlog, StreamState
from accrue.services.observability.adapters.ledger import (
    ForecastVersionTotals,
    InvoiceRecord,
    Lag,
    PostedLine,
)
from accrue.services.observability.adapters.proto import legal_entity_reconciliation
from accrue.services.observability.adapters.sources import StageSources
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.domain.forecast import MonthTotal, Variance, forecast_variance
from accrue.services.observability.domain.kpis import Figures, bucket_starts, unbilled_figures
from accrue.services.observability.domain.reconciliation import (
    ConfirmedLine,
    LegalEntityResult,
    Valuation,
    periods_due,
    reconcile,
)
from accrue.services.observability.service_layer import metrics as m
from accrue.telemetry import get_logger

log = get_logger(__name__)

ERP_POST_FAILED = "ERP_POST_FAILED"
# The KPIs' lags are over the entries of this recent window.
LAG_WINDOW = dt.timedelta(days=30)


@dataclass
class Kpis:
    """Everything GetKpis answers."""

    figures: Figures
    backlogs: list[Backlog]
    dead_letters: dict[str, int]
    computed_at: dt.datetime
    posting_backlog: dict[str, int] = field(default_factory=dict)
    open_exceptions: dict[tuple[str, str], int] = field(default_factory=dict)
    variance: list[Variance] = field(default_factory=list)
    forecast_version_id: str = ""
    reconciliation_differences: dict[str, int] = field(default_factory=dict)
    lags: dict[tuple[str, str], Lag] = field(default_factory=dict)

    @property
    def dead_letter_total(self) -> int:
        return sum(self.dead_letters.values())

    def legal_entities(self) -> list[str]:
        """Every legal entity any figure names."""
        names = set(self.figures.by_legal_entity) | set(self.posting_backlog)
        names |= {le for le, _ in self.open_exceptions} | {v.legal_entity_id for v in self.variance}
        names |= set(self.reconciliation_differences) | {le for le, _ in self.lags}
        return sorted(names)


@dataclass
class ReconciliationReport:
    """A reconciliation of one period."""

    period_start: dt.date
    period_end: dt.date
    legal_entities: list[LegalEntityResult]
    computed_at: dt.datetime

    @property
    def difference_count(self) -> int:
        return sum(e.difference_count for e in self.legal_entities)


def _scope() -> frozenset[str] | None:
    """The legal entities the caller sees; None for every one (and for Accrue's services)."""
    principal = current_principal()
    return None if principal.is_service else principal.legal_entity_scope


def _time(message: Any, name: str) -> dt.datetime | None:
    return getattr(message, name).ToDatetime(dt.UTC) if message.HasField(name) else None


def _status(invoice: Any) -> str:
    return str(bl.InvoiceStatus.Name(invoice.status)).removeprefix("INVOICE_STATUS_")


class Observability:
    """The observability application service.

    Business dates are the legal entity's (its time zone, from md.legal_entity.upserted): the
    age of unbilled work in days, the months a forecast version had closed, the months the
    schedule reconciles. Lags are durations between instants, the same in every zone.
    """

    def __init__(
        self,
        uow_factory: Callable[[], ObservabilityUnitOfWork],
        streams: StreamState,
        sources: StageSources | None = None,
        *,
        clock: Clock,
    ) -> None:
        self._uow = uow_factory
        self._streams = streams
        self._sources = sources
        self._clock = clock

    # --- events into the ledger -----------------------------------------------------------

    async def record_legal_entity(self, uow: ObservabilityUnitOfWork, legal_entity: Any) -> None:
        """md.legal_entity.upserted: its time zone is kept; its counters and histograms start at zero."""
        await uow.ledger.legal_entity(legal_entity.id, legal_entity.time_zone or UTC_ZONE)
        uow.after_commit(lambda: m.known_legal_entity(legal_entity.id))

    async def record_approved(self, uow: ObservabilityUnitOfWork, entry: Any) -> None:
        """time.entry.approved: the entry becomes unbilled approved work; approval lag observed."""
        m.known_legal_entity(entry.legal_entity_id)
        rate = parse_decimal(entry.indicative_rate.amount) if entry.indicative_rate.amount else None
        approved_at = _time(entry, "approve_time")
        submitted_at = _time(entry, "create_time")
        await uow.ledger.approved(
            entry.id,
            entry.legal_entity_id,
            entry.project_id,
            parse_decimal(entry.hours),
            entry.billable,
            rate,
            entry.indicative_rate.currency,
            approved_at,
            dt.date.fromisoformat(entry.work_date) if entry.work_date else None,
            submitted_at,
        )
        if approved_at is not None and submitted_at is not None:
            lag = max(0.0, (approved_at - submitted_at).total_seconds())
            uow.after_commit(lambda: m.APPROVAL_LAG.labels(entry.legal_entity_id).observe(lag))

    async def record_reversed(
        self, uow: ObservabilityUnitOfWork, original: Any, at: dt.datetime | None
    ) -> None:
        """time.entry.reversed: the original is no longer approved work (as of its update time,
        else the event's, else now)."""
        await uow.ledger.reversed(original.id, _time(original, "update_time") or at or self._clock())

    async def record_invoice(self, uow: ObservabilityUnitOfWork, invoice: Any, event_type: str) -> None:
        """billing.invoice.*: keep the invoice; drafts bill entries, voids release them, posts confirm."""
        m.known_legal_entity(invoice.legal_entity_id)
        status = _status(invoice)
        updated = _time(invoice, "update_time") or _time(invoice, "create_time") or self._clock()
        fresh = await uow.ledger.invoice(
            InvoiceRecord(
                invoice.id,
                invoice.legal_entity_id,
                invoice.currency,
                status,
                parse_decimal(invoice.subtotal) if invoice.subtotal else None,
                invoice.erp_document_id,
                _time(invoice, "post_time"),
                updated,
            )
        )
        # Only TIME lines bill entries; a credit note's lines name the entries it credits.
        time_lines = [line for line in invoice.lines if line.kind == bl.INVOICE_LINE_KIND_TIME]
        ids = [i for line in time_lines for i in line.source_time_entry_ids]
        le = invoice.legal_entity_id
        if event_type == "billing.invoice.voided":
            await uow.ledger.uninvoiced(invoice.id)
            await uow.ledger.remove_posted_lines(invoice.id)
            return
        if not fresh:
            return  # a late event about an invoice that has moved on
        if event_type == "billing.invoice.drafted":
            at = _time(invoice, "create_time") or self._clock()
            await uow.ledger.invoiced(ids, invoice.id, at)
            await self._observe_invoice_lag(uow, ids, at, le, "draft")
        elif event_type == "billing.invoice.posted":
            at = _time(invoice, "post_time") or self._clock()
            await uow.ledger.invoiced(ids, invoice.id, _time(invoice, "create_time") or at)
            await uow.ledger.posted(ids, at)
            await uow.ledger.add_posted_lines(
                le,
                [
                    PostedLine(
                        invoice.id,
                        line.project_id,
                        parse_decimal(line.amount) if line.amount else Decimal(0),
                        invoice.currency,
                        tuple(line.source_time_entry_ids),
                    )
                    for line in time_lines
                    if line.source_time_entry_ids
                ],
            )
            await self._observe_invoice_lag(uow, ids, at, le, "posted")
            uow.after_commit(lambda: m.ERP_POSTINGS.labels(le).inc())

    async def _observe_invoice_lag(
        self, uow: ObservabilityUnitOfWork, ids: list[str], at: dt.datetime, le: str, stage: str
    ) -> None:
        known = await uow.ledger.entries(ids)
        lags = [
            max(0.0, (at - e.approve_time).total_seconds())
            for e in known.values()
            if e.approve_time is not None
        ]

        def observe() -> None:
            for lag in lags:
                m.INVOICE_LAG.labels(le, stage).observe(lag)

        uow.after_commit(observe)

    async def record_exception(self, uow: ObservabilityUnitOfWork, event: Any, is_open: bool) -> None:
        """billing.exception.raised/resolved: ERP posting failures are counted as they are raised."""
        exc = event.billing_exception
        kind = str(bl.BillingExceptionKind.Name(exc.kind)).removeprefix("BILLING_EXCEPTION_KIND_")
        le = event.legal_entity_id or exc.legal_entity_id
        m.known_legal_entity(le)
        await uow.ledger.exception(exc.id, le, kind, is_open)
        if is_open and kind == ERP_POST_FAILED:
            uow.after_commit(lambda: m.ERP_POSTING_FAILURES.labels(le).inc())

    async def record_forecast_version(self, uow: ObservabilityUnitOfWork, version: Any) -> None:
        """forecast.version.published: keep the version's totals for variance."""
        await uow.ledger.forecast_version(
            ForecastVersionTotals(
                version.version_id,
                version.previous_version_id,
                _time(version, "create_time") or self._clock(),
                [
                    MonthTotal(
                        t.legal_entity_id,
                        t.month,
                        t.currency,
                        parse_decimal(t.forecast_revenue or "0"),
                        parse_decimal(t.actual_revenue or "0"),
                    )
                    for t in version.totals
                ],
            )
        )
        uow.after_commit(m.FORECAST_VERSIONS.inc)

    # --- KPIs -------------------------------------------------------------------------------

    async def kpis(self, legal_entity_id: str = "") -> Kpis:
        """The KPIs now, of the legal entities the caller sees (legal-entity-scope)."""
        return await self._kpis(legal_entity_id, _scope())

    async def _kpis(self, legal_entity_id: str, scope: frozenset[str] | None) -> Kpis:
        """The KPIs now, of the legal entities in scope (None: every one).

        Every per-entity figure is narrowed to scope, so every total made of them (unbilled
        hours and value, ERP posting backlog, forecast variance) adds up those entities only.
        The stream backlogs and dead letters are the system's, not any entity's, and stay.
        """
        now = self._clock()
        async with self._uow() as uow:
            zones = await uow.ledger.time_zones()
            own = {le: bucket_starts(now, z) for le, z in zones.items() if z not in ("", UTC_ZONE)}
            work = await uow.ledger.unbilled(own, bucket_starts(now, UTC_ZONE), legal_entity_id, scope)
            backlog = await uow.ledger.posting_backlog()
            exceptions = await uow.ledger.open_exceptions()
            latest, previous = await uow.ledger.latest_forecast_versions()
            differences = await uow.ledger.latest_reconciliation_differences()
            lags = await uow.ledger.lags(now - LAG_WINDOW)
        variance: list[Variance] = []
        if latest is not None:
            variance = forecast_variance(
                latest.totals, previous.totals if previous else None, latest.create_time, zones
            )
        kpis = Kpis(
            unbilled_figures(work, now, zones),
            await self._streams.backlogs(),
            await self._streams.dead_letters(),
            now,
            backlog,
            exceptions,
            variance,
            latest.version_id if latest else "",
            differences,
            lags,
        )
        if legal_entity_id or scope is not None:

            def keeps(entity: str) -> bool:
                return (not legal_entity_id or entity == legal_entity_id) and (
                    scope is None or entity in scope
                )

            kpis.posting_backlog = {k: v for k, v in backlog.items() if keeps(k)}
            kpis.open_exceptions = {k: v for k, v in exceptions.items() if keeps(k[0])}
            kpis.variance = [v for v in variance if keeps(v.legal_entity_id)]
            kpis.reconciliation_differences = {k: v for k, v in differences.items() if keeps(k)}
            kpis.lags = {k: v for k, v in lags.items() if keeps(k[0])}
        return kpis

    def _export(self, kpis: Kpis) -> None:
        now = kpis.computed_at
        for gauge in (
            m.UNBILLED_HOURS,
            m.UNBILLED_VALUE,
            m.UNBILLED_OLDEST,
            m.SYNC_BACKLOG,
            m.CONSUMER_PENDING,
            m.CONSUMER_DELIVERED,
            m.CONSUMER_REDELIVERED,
            m.ERP_POSTING_BACKLOG,
            m.BILLING_EXCEPTIONS_OPEN,
            m.FORECAST_REVENUE,
            m.FORECAST_VARIANCE,
            m.DEAD_LETTERS_BY_CONSUMER,
            m.RECONCILIATION_DIFFERENCES,
        ):
            gauge.clear()
        for entity, figures in kpis.figures.by_legal_entity.items():
            m.UNBILLED_OLDEST.labels(entity).set(figures.oldest_age_seconds(now))
            for age, bucket in figures.by_age.items():
                m.UNBILLED_HOURS.labels(entity, age).set(float(bucket.hours))
                for currency, value in bucket.value.items():
                    m.UNBILLED_VALUE.labels(entity, currency, age).set(float(value))
        for entity in kpis.legal_entities():
            m.known_legal_entity(entity)  # after a restart, before any new event names it
            m.ERP_POSTING_BACKLOG.labels(entity).set(kpis.posting_backlog.get(entity, 0))
            m.BILLING_EXCEPTIONS_OPEN.labels(entity, ERP_POST_FAILED).set(
                kpis.open_exceptions.get((entity, ERP_POST_FAILED), 0)
            )
        for (entity, kind), count in kpis.open_exceptions.items():
            m.BILLING_EXCEPTIONS_OPEN.labels(entity, kind).set(count)
        for v in kpis.variance:
            m.FORECAST_REVENUE.labels(v.legal_entity_id, v.currency, "latest").set(float(v.latest_forecast))
            m.FORECAST_REVENUE.labels(v.legal_entity_id, v.currency, "previous").set(
                float(v.previous_forecast)
            )
            m.FORECAST_VARIANCE.labels(v.legal_entity_id, v.currency, "previous").set(
                float(v.against_previous)
            )
            m.FORECAST_VARIANCE.labels(v.legal_entity_id, v.currency, "actuals").set(float(v.against_actuals))
        for b in kpis.backlogs:
            m.SYNC_BACKLOG.labels(b.stream, b.consumer).set(b.total)
            m.CONSUMER_PENDING.labels(b.stream, b.consumer, "pending").set(b.num_pending)
            m.CONSUMER_PENDING.labels(b.stream, b.consumer, "ack_pending").set(b.num_ack_pending)
            m.CONSUMER_DELIVERED.labels(b.stream, b.consumer).set(b.delivered)
            m.CONSUMER_REDELIVERED.labels(b.stream, b.consumer).set(b.redelivered)
        m.DEAD_LETTERS.set(kpis.dead_letter_total)
        for consumer, count in kpis.dead_letters.items():
            m.DEAD_LETTERS_BY_CONSUMER.labels(consumer).set(count)
        for entity, count in kpis.reconciliation_differences.items():
            m.RECONCILIATION_DIFFERENCES.labels(entity).set(count)

    async def export_metrics_once(self) -> Kpis:
        """Recompute every business gauge (of every legal entity: the metrics are the firm's)."""
        kpis = await self._kpis("", None)
        self._export(kpis)
        m.KPI_EXPORTS.labels("ok").inc()
        return kpis

    async def export_metrics(self, interval: float = 10.0) -> None:
        """Keep the Prometheus gauges current (until cancelled)."""
        while True:
            try:
                await self.export_metrics_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                m.KPI_EXPORTS.labels("failed").inc()
                log.warning("kpi_export_failed", error=repr(exc))
            await asyncio.sleep(interval)

    # --- reconciliation ---------------------------------------------------------------------

    async def reconcile(
        self, period_start: str, period_end: str, legal_entity_id: str = ""
    ) -> ReconciliationReport:
        """Reconcile a period on demand: compare the stages, record the result, raise on a mismatch.

        A caller limited to some legal entities reconciles (and records, and raises mismatches
        for) those entities only; another entity named reads as one without any work.
        """
        scope = _scope()
        check = Violations()
        start = check.date("period_start", period_start)
        end = check.date("period_end", period_end)
        check.date_range("period_start", start, "period_end", end)
        check.raise_if_any("the reconciliation period is invalid")
        assert start is not None
        assert end is not None
        return await self.reconcile_period(start, end, legal_entity_id, scope)

    async def reconcile_period(
        self,
        start: dt.date,
        end: dt.date,
        legal_entity_id: str = "",
        scope: frozenset[str] | None = None,
    ) -> ReconciliationReport:
        """Compare the stages of one period (of the legal entities in scope; None: every one); a
        mismatch sets the metric and publishes an event."""
        if self._sources is None:
            raise RuntimeError("reconciliation needs timekeeping and billing addresses")
        if scope is not None and legal_entity_id and legal_entity_id not in scope:
            approved, billed = [], []  # not asked of the sources at all
        else:
            approved = await self._sources.approved(start, end, legal_entity_id)
            billed = await self._sources.billed(start, end, legal_entity_id)
        if scope is not None:
            approved = [e for e in approved if e.legal_entity_id in scope]
            billed = [e for e in billed if e.legal_entity_id in scope]
        ids = {e.time_entry_id for e in approved} | {e.time_entry_id for e in billed}
        now = self._clock()
        async with self._uow() as uow:
            ledger = await uow.ledger.entries(ids)
            lines = await uow.ledger.posted_lines_for(ids)
            valuations = {
                i: Valuation(e.rate, e.currency)
                for i, e in ledger.items()
                if e.rate is not None and e.currency
            }
            results = reconcile(
                approved,
                billed,
                [ConfirmedLine(line.amount, line.currency, line.time_entry_ids) for line in lines],
                valuations,
            )
            report = ReconciliationReport(start, end, results, now)
            for entity in results:
                await uow.ledger.reconciled(start, end, entity.legal_entity_id, entity.difference_count, now)
                audit.note(
                    "reconciliation",
                    f"{entity.legal_entity_id}/{start.isoformat()}/{end.isoformat()}",
                    entity.legal_entity_id,
                    None,
                    {"period_start": start, "period_end": end, "difference_count": entity.difference_count},
                )
                if entity.difference_count:
                    uow.events.add(self._mismatch_event(report, entity))
            await uow.commit()
        m.RECONCILIATIONS.labels("mismatched" if report.difference_count else "matched").inc()
        for entity in results:
            m.RECONCILIATION_DIFFERENCES.labels(entity.legal_entity_id).set(entity.difference_count)
        if report.difference_count:
            log.warning(
                "reconciliation_mismatch",
                period_start=start.isoformat(),
                period_end=end.isoformat(),
                differences=report.difference_count,
            )
        return report

    def _mismatch_event(self, report: ReconciliationReport, entity: LegalEntityResult) -> Event:
        return Event(
            "observability.reconciliation.mismatch_found",
            entity.legal_entity_id,
            oev.ReconciliationMismatchFound(
                period_start=report.period_start.isoformat(),
                period_end=report.period_end.isoformat(),
                reconciliation=legal_entity_reconciliation(entity),
            ),
            occurred_at=report.computed_at,
        )

    async def reconcile_on_schedule(self, interval: float, months: int = 2) -> None:
        """Reconcile the current and previous months every interval (until cancelled): each legal
        entity's, in its time zone (domain.reconciliation.periods_due)."""
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._uow() as uow:
                    zones = await uow.ledger.time_zones()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduled_reconciliation_failed", error=repr(exc))
                continue
            for start, end in periods_due(self._clock(), zones.values(), months):
                try:
                    await self.reconcile_period(start, end)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "scheduled_reconciliation_failed", period_start=start.isoformat(), error=repr(exc)
                    )
