"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from decimal import Decimal

from accrue.db.audit_api import AuditAggregator, Query, narrowed
from accrue.money import format_decimal
from accrue.observability.v1 import observability_service_pb2 as api
from accrue.observability.v1 import observability_service_pb2_grpc as api_grpc
from accrue.observability.v1 import resources_pb2 as res
from accrue.runtime.grpc_types import Context
from accrue.services.observability.adapters.ledger import Lag
from accrue.services.observability.adapters.proto import legal_entity_reconciliation, money
from accrue.services.observability.domain.forecast import Variance
from accrue.services.observability.domain.kpis import AGE_BUCKETS
from accrue.services.observability.service_layer.handlers import ERP_POST_FAILED, Observability


def _variance(v: Variance, version_id: str) -> api.ForecastVariance:
    return api.ForecastVariance(
        legal_entity_id=v.legal_entity_id,
        currency=v.currency,
        latest_forecast=format_decimal(v.latest_forecast, 2),
        previous_forecast=format_decimal(v.previous_forecast, 2),
        against_previous=format_decimal(v.against_previous, 2),
        against_actuals=format_decimal(v.against_actuals, 2),
        version_id=version_id,
    )


def _lag(lag: Lag | None) -> api.LagKpis | None:
    if lag is None:
        return None
    message = api.LagKpis(entry_count=lag.entry_count)
    message.median.FromNanoseconds(round(lag.median * 1e9))
    message.p90.FromNanoseconds(round(lag.p90 * 1e9))
    return message


class ObservabilityServicer(api_grpc.ObservabilityServiceServicer):
    """The ObservabilityService RPCs."""

    def __init__(self, app: Observability, audit: AuditAggregator | None = None) -> None:
        self.app = app
        # Every service's audit trail (set by the bootstrap, which makes the channels).
        self.audit = audit

    def _audit(self) -> AuditAggregator:
        if self.audit is None:
            raise RuntimeError("the audit trail sources are not wired")
        return self.audit

    async def ListAuditEvents(
        self, request: api.ListAuditEventsRequest, context: Context
    ) -> api.ListAuditEventsResponse:
        query = Query(
            legal_entity_ids=narrowed(request.legal_entity_id),
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            actor=request.actor,
            outcome=request.outcome,
            start_time=request.start_time if request.HasField("start_time") else None,
            end_time=request.end_time if request.HasField("end_time") else None,
        )
        page = await self._audit().list_events(query, request.page_size, request.page_token, request.service)
        return api.ListAuditEventsResponse(events=page.events, next_page_token=page.next_page_token)

    async def VerifyAuditTrail(
        self, request: api.VerifyAuditTrailRequest, context: Context
    ) -> api.VerifyAuditTrailResponse:
        result = await self._audit().verify_chains(narrowed(request.legal_entity_id))
        return api.VerifyAuditTrailResponse(ok=result.ok, chains=result.chains, events=result.events)

    async def GetKpis(self, request: api.GetKpisRequest, context: Context) -> api.GetKpisResponse:
        kpis = await self.app.kpis(request.legal_entity_id)
        figures = kpis.figures
        entities = []
        for entity in kpis.legal_entities():
            f = figures.by_legal_entity.get(entity)
            entities.append(
                api.LegalEntityKpis(
                    legal_entity_id=entity,
                    unbilled_approved_hours=format_decimal(f.hours if f else Decimal(0), 2),
                    unbilled_approved_value=money(f.value) if f else [],
                    unbilled_by_age=[
                        api.AgeBucketKpis(
                            age=label,
                            hours=format_decimal(f.by_age[label].hours, 2),
                            value=money(f.by_age[label].value),
                        )
                        for label, _ in AGE_BUCKETS
                        if f and label in f.by_age
                    ],
                    oldest_unbilled_age_days=f.oldest_age_days if f else 0,
                    erp_posting_backlog=kpis.posting_backlog.get(entity, 0),
                    erp_posting_failures_open=kpis.open_exceptions.get((entity, ERP_POST_FAILED), 0),
                    forecast_variance=[
                        _variance(v, kpis.forecast_version_id)
                        for v in kpis.variance
                        if v.legal_entity_id == entity
                    ],
                    reconciliation_differences=kpis.reconciliation_differences.get(entity, 0),
                    approval_lag=_lag(kpis.lags.get((entity, "approval"))),
                    invoice_lag_draft=_lag(kpis.lags.get((entity, "draft"))),
                    invoice_lag_posted=_lag(kpis.lags.get((entity, "posted"))),
                )
            )
        message = api.Kpis(
            unbilled_approved_hours=format_decimal(figures.hours, 2),
            unbilled_approved_value=money(figures.value),
            sync_backlog=sum(b.total for b in kpis.backlogs),
            dead_letters=kpis.dead_letter_total,
            by_legal_entity=entities,
            consumers=[
                api.ConsumerBacklog(
                    stream=b.stream,
                    consumer=b.consumer,
                    num_pending=b.num_pending,
                    num_ack_pending=b.num_ack_pending,
                    delivered=b.delivered,
                    redelivered=b.redelivered,
                    dead_letters=kpis.dead_letters.get(b.consumer, 0),
                )
                for b in kpis.backlogs
            ],
            erp_posting_backlog=sum(kpis.posting_backlog.values()),
            forecast_variance=[_variance(v, kpis.forecast_version_id) for v in kpis.variance],
            dead_letters_by_consumer=kpis.dead_letters,
        )
        message.compute_time.FromDatetime(kpis.computed_at)
        return api.GetKpisResponse(kpis=message)

    async def GetReconciliation(
        self, request: api.GetReconciliationRequest, context: Context
    ) -> api.GetReconciliationResponse:
        report = await self.app.reconcile(request.period_start, request.period_end, request.legal_entity_id)
        message = res.Reconciliation(
            period_start=report.period_start.isoformat(),
            period_end=report.period_end.isoformat(),
            matched=report.difference_count == 0,
            difference_count=report.difference_count,
            legal_entities=[legal_entity_reconciliation(e) for e in report.legal_entities],
        )
        message.compute_time.FromDatetime(report.computed_at)
        return api.GetReconciliationResponse(reconciliation=message)
