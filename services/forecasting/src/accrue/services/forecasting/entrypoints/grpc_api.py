"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from accrue.forecasting.v1 import forecasting_service_pb2 as api
from accrue.forecasting.v1 import forecasting_service_pb2_grpc as api_grpc
from accrue.money import format_decimal
from accrue.runtime.grpc_types import Context
from accrue.services.forecasting.adapters import codec
from accrue.services.forecasting.domain.forecast import Filters
from accrue.services.forecasting.service_layer.handlers import Forecasting


class ForecastingServicer(api_grpc.ForecastingServiceServicer):
    """The ForecastingService RPCs."""

    def __init__(self, app: Forecasting) -> None:
        self.app = app

    async def GetForecast(self, request: api.GetForecastRequest, context: Context) -> api.GetForecastResponse:
        filters = Filters(
            project_id=request.project_id,
            customer_id=request.customer_id,
            legal_entity_id=request.legal_entity_id,
            month_from=request.month_from,
            month_to=request.month_to,
        )
        return api.GetForecastResponse(forecast=await self.app.forecast(filters))

    async def CreateForecastVersion(
        self, request: api.CreateForecastVersionRequest, context: Context
    ) -> api.CreateForecastVersionResponse:
        version = await self.app.create_version(request.forecast_version.name)
        return api.CreateForecastVersionResponse(forecast_version=version)

    async def GetForecastVersion(
        self, request: api.GetForecastVersionRequest, context: Context
    ) -> api.GetForecastVersionResponse:
        return api.GetForecastVersionResponse(forecast_version=await self.app.get_version(request.id))

    async def ListForecastVersions(
        self, request: api.ListForecastVersionsRequest, context: Context
    ) -> api.ListForecastVersionsResponse:
        versions, token = await self.app.list_versions(request.page_size, request.page_token)
        return api.ListForecastVersionsResponse(forecast_versions=versions, next_page_token=token)

    async def CompareForecastVersions(
        self, request: api.CompareForecastVersionsRequest, context: Context
    ) -> api.CompareForecastVersionsResponse:
        found = await self.app.compare(request.id, request.other_id)
        return api.CompareForecastVersionsResponse(
            id=request.id,
            other_id=request.other_id,
            rows=[
                api.VarianceRow(
                    project_id=r.project_id,
                    opportunity_id=r.opportunity_id,
                    month=r.month,
                    currency=r.currency,
                    base_hours=codec.hours(r.base_hours),
                    other_hours=codec.hours(r.other_hours),
                    base_revenue=codec.money(r.base_revenue, r.currency),
                    other_revenue=codec.money(r.other_revenue, r.currency),
                    change=codec.money(r.change, r.currency),
                    volume=codec.money(r.volume, r.currency),
                    rate=codec.money(r.rate, r.currency),
                    timing=codec.money(r.timing, r.currency),
                )
                for r in found
            ],
        )

    async def GetForecastAccuracy(
        self, request: api.GetForecastAccuracyRequest, context: Context
    ) -> api.GetForecastAccuracyResponse:
        rows, totals = await self.app.accuracy(request.id, request.month)
        return api.GetForecastAccuracyResponse(
            id=request.id,
            month=request.month,
            rows=[
                api.AccuracyRow(
                    project_id=r.project_id,
                    currency=r.currency,
                    forecast_revenue=codec.money(r.forecast_revenue, r.currency),
                    actual_revenue=codec.money(r.actual_revenue, r.currency),
                    variance=codec.money(r.variance, r.currency),
                    forecast_hours=codec.hours(r.forecast_hours),
                    actual_hours=codec.hours(r.actual_hours),
                )
                for r in rows
            ],
            totals=[
                api.AccuracyTotal(
                    currency=t.currency,
                    forecast_revenue=codec.money(t.forecast_revenue, t.currency),
                    actual_revenue=codec.money(t.actual_revenue, t.currency),
                    variance=codec.money(t.variance, t.currency),
                    absolute_percentage_error=format_decimal(t.absolute_percentage_error)
                    if t.absolute_percentage_error is not None
                    else "",
                )
                for t in totals
            ],
        )

    async def GetUtilization(
        self, request: api.GetUtilizationRequest, context: Context
    ) -> api.GetUtilizationResponse:
        rows = await self.app.utilization(
            request.consultant_id, request.legal_entity_id, request.month_from, request.month_to
        )
        return api.GetUtilizationResponse(rows=[codec.utilization(u) for u in rows])
