"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from decimal import Decimal

from accrue.forecasting.v1 import forecasting_service_pb2 as api
from accrue.forecasting.v1 import forecasting_service_pb2_grpc as api_grpc
from accrue.money import format_decimal, format_money, is_currency
from accrue.runtime.grpc_types import Context
from accrue.services.forecasting.service_layer.handlers import Forecasting


def _money(value: Decimal, currency: str) -> str:
    return format_money(value, currency) if is_currency(currency) else format_decimal(value, 2)


class ForecastingServicer(api_grpc.ForecastingServiceServicer):
    """The ForecastingService RPCs."""

    def __init__(self, app: Forecasting) -> None:
        self.app = app

    async def GetForecast(self, request: api.GetForecastRequest, context: Context) -> api.GetForecastResponse:
        filters = {
            "project_id": request.project_id,
            "customer_id": request.customer_id,
            "legal_entity_id": request.legal_entity_id,
            "month_from": request.month_from,
            "month_to": request.month_to,
        }
        found, newest = await self.app.forecast(filters)
        forecast = api.Forecast(
            rows=[
                api.ForecastRow(
                    project_id=r.project_id,
                    customer_id=r.customer_id,
                    legal_entity_id=r.legal_entity_id,
                    month=r.month,
                    currency=r.currency,
                    approved_hours=format_decimal(r.approved_hours, 2),
                    wip=_money(r.wip, r.currency),
                    actual_revenue=_money(r.actual_revenue, r.currency),
                )
                for r in found
            ]
        )
        if newest is not None:
            forecast.as_of_time.FromDatetime(newest)
        return api.GetForecastResponse(forecast=forecast)
