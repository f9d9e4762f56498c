"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from typing import Any

from accrue.billing.v1 import billing_service_pb2 as api
from accrue.billing.v1 import billing_service_pb2_grpc as api_grpc
from accrue.billing.v1 import resources_pb2 as bl
from accrue.runtime.grpc_types import Context
from accrue.services.billing.service_layer.handlers import Billing


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return "" if value == 0 else str(enum.Name(value)).removeprefix(prefix)


class BillingServicer(api_grpc.BillingServiceServicer):
    """The BillingService RPCs."""

    def __init__(self, app: Billing) -> None:
        self.app = app

    async def CreateBillingRun(
        self, request: api.CreateBillingRunRequest, context: Context
    ) -> api.CreateBillingRunResponse:
        wanted = request.billing_run
        result = await self.app.run(wanted.period_start, wanted.period_end, wanted.legal_entity_id)
        run = bl.BillingRun(
            id=result.run_id,
            legal_entity_id=result.legal_entity_id,
            period_start=result.period_start.isoformat(),
            period_end=result.period_end.isoformat(),
            invoices=result.invoices,
            exceptions=result.exceptions,
        )
        run.create_time.FromDatetime(result.create_time)
        return api.CreateBillingRunResponse(billing_run=run)

    async def GetInvoice(self, request: api.GetInvoiceRequest, context: Context) -> api.GetInvoiceResponse:
        return api.GetInvoiceResponse(invoice=await self.app.get_invoice(request.id))

    async def ListInvoices(
        self, request: api.ListInvoicesRequest, context: Context
    ) -> api.ListInvoicesResponse:
        filters = {
            "legal_entity_id": request.legal_entity_id,
            "customer_id": request.customer_id,
            "status": _enum_name(bl.InvoiceStatus, request.status, "INVOICE_STATUS_"),
            "billing_run_id": request.billing_run_id,
        }
        invoices, token = await self.app.list_invoices(filters, request.page_size, request.page_token)
        return api.ListInvoicesResponse(invoices=invoices, next_page_token=token)

    async def ListBillingExceptions(
        self, request: api.ListBillingExceptionsRequest, context: Context
    ) -> api.ListBillingExceptionsResponse:
        filters = {
            "status": _enum_name(bl.BillingExceptionStatus, request.status, "BILLING_EXCEPTION_STATUS_"),
            "kind": _enum_name(bl.BillingExceptionKind, request.kind, "BILLING_EXCEPTION_KIND_"),
        }
        found, token = await self.app.list_exceptions(filters, request.page_size, request.page_token)
        return api.ListBillingExceptionsResponse(billing_exceptions=found, next_page_token=token)
