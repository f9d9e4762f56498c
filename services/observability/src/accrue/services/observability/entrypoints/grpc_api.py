"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from accrue.money import format_decimal, format_money
from accrue.observability.v1 import observability_service_pb2 as api
from accrue.observability.v1 import observability_service_pb2_grpc as api_grpc
from accrue.runtime.grpc_types import Context
from accrue.services.observability.service_layer.handlers import Observability
from accrue.type.v1 import types_pb2


def _money(values: Mapping[str, Decimal]) -> list[types_pb2.Money]:
    return [types_pb2.Money(currency=c, amount=format_money(v, c)) for c, v in sorted(values.items())]


class ObservabilityServicer(api_grpc.ObservabilityServiceServicer):
    """The ObservabilityService RPCs."""

    def __init__(self, app: Observability) -> None:
        self.app = app

    async def GetKpis(self, request: api.GetKpisRequest, context: Context) -> api.GetKpisResponse:
        kpis = await self.app.kpis(request.legal_entity_id)
        figures = kpis.figures
        message = api.Kpis(
            unbilled_approved_hours=format_decimal(figures.hours, 2),
            unbilled_approved_value=_money(figures.value),
            sync_backlog=sum(b.total for b in kpis.backlogs),
            dead_letters=kpis.dead_letters,
            by_legal_entity=[
                api.LegalEntityKpis(
                    legal_entity_id=entity,
                    unbilled_approved_hours=format_decimal(f.hours, 2),
                    unbilled_approved_value=_money(f.value),
                )
                for entity, f in sorted(figures.by_legal_entity.items())
            ],
            consumers=[
                api.ConsumerBacklog(
                    stream=b.stream,
                    consumer=b.consumer,
                    num_pending=b.num_pending,
                    num_ack_pending=b.num_ack_pending,
                )
                for b in kpis.backlogs
            ],
        )
        message.compute_time.FromDatetime(kpis.computed_at)
        return api.GetKpisResponse(kpis=message)
