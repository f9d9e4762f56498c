"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from accrue.billing.v1 import billing_service_pb2 as api
from accrue.billing.v1 import billing_service_pb2_grpc as api_grpc
from accrue.billing.v1 import resources_pb2 as bl
from accrue.money import format_decimal
from accrue.runtime.grpc_types import Context
from accrue.runtime.identity import acting_principal, current_principal
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
        result = await self.app.run(
            wanted.period_start,
            wanted.period_end,
            wanted.legal_entity_id,
            wanted.billing_period,
            by=current_principal(context),
        )
        return api.CreateBillingRunResponse(billing_run=await self.app.describe_run(result))

    async def GetBillingRun(
        self, request: api.GetBillingRunRequest, context: Context
    ) -> api.GetBillingRunResponse:
        return api.GetBillingRunResponse(
            billing_run=await self.app.get_run(request.id, by=current_principal(context))
        )

    async def GetInvoice(self, request: api.GetInvoiceRequest, context: Context) -> api.GetInvoiceResponse:
        return api.GetInvoiceResponse(
            invoice=await self.app.get_invoice(request.id, by=current_principal(context))
        )

    async def ListInvoices(
        self, request: api.ListInvoicesRequest, context: Context
    ) -> api.ListInvoicesResponse:
        filters = {
            "legal_entity_id": request.legal_entity_id,
            "customer_id": request.customer_id,
            "status": _enum_name(bl.InvoiceStatus, request.status, "INVOICE_STATUS_"),
            "billing_run_id": request.billing_run_id,
        }
        invoices, token = await self.app.list_invoices(
            filters, request.page_size, request.page_token, by=current_principal(context)
        )
        return api.ListInvoicesResponse(invoices=invoices, next_page_token=token)

    async def ApproveInvoice(
        self, request: api.ApproveInvoiceRequest, context: Context
    ) -> api.ApproveInvoiceResponse:
        actor = acting_principal(context, request.actor_id, "actor_id")
        return api.ApproveInvoiceResponse(invoice=await self.app.approve(request.id, by=actor))

    async def PostInvoice(self, request: api.PostInvoiceRequest, context: Context) -> api.PostInvoiceResponse:
        actor = acting_principal(context, request.actor_id, "actor_id")
        return api.PostInvoiceResponse(invoice=await self.app.request_posting(request.id, by=actor))

    async def VoidInvoice(self, request: api.VoidInvoiceRequest, context: Context) -> api.VoidInvoiceResponse:
        actor = acting_principal(context, request.actor_id, "actor_id")
        return api.VoidInvoiceResponse(invoice=await self.app.void(request.id, request.reason, by=actor))

    async def GetCapStatus(
        self, request: api.GetCapStatusRequest, context: Context
    ) -> api.GetCapStatusResponse:
        status = await self.app.cap_status(request.contract_line_id, by=current_principal(context))
        return api.GetCapStatusResponse(cap_status=status)

    async def SummarizeBilledWork(
        self, request: api.SummarizeBilledWorkRequest, context: Context
    ) -> api.SummarizeBilledWorkResponse:
        rows = await self.app.work_summary(
            request.period_start, request.period_end, request.legal_entity_id, by=current_principal(context)
        )
        by_project: dict[str, list[Any]] = {}
        for row in rows:
            by_project.setdefault(row.project_id, []).append(row)
        summaries = []
        for project_id, group in sorted(by_project.items()):
            live = [r for r in group if r.invoice_id is not None and r.status != "VOID"]
            summaries.append(
                api.BilledWorkSummary(
                    project_id=project_id,
                    legal_entity_id=group[0].legal_entity_id,
                    entry_count=len(group),
                    hours=_hours(group),
                    unbilled_hours=_hours(
                        [
                            r
                            for r in group
                            if r.billable and r.hold is None and (r.invoice_id is None or r.status == "VOID")
                        ]
                    ),
                    billed_hours=_hours(live),
                    posted_hours=_hours([r for r in live if r.status == "POSTED"]),
                    written_off_hours=_hours([r for r in group if r.hold == "WRITTEN_OFF"]),
                    fixed_fee_hours=_hours([r for r in group if r.hold == "FIXED_FEE"]),
                    entries=[
                        api.BilledEntry(
                            time_entry_id=r.time_entry_id,
                            hours=format_decimal(Decimal(r.hours), 2),
                            billable=r.billable,
                            invoice_id=r.invoice_id or "",
                            invoice_status=_status(r.status),
                            reverses_id=r.reverses_id or "",
                            written_off=r.hold == "WRITTEN_OFF",
                            cancelled=r.hold == "CANCELLED",
                            fixed_fee=r.hold == "FIXED_FEE",
                        )
                        for r in group
                    ],
                )
            )
        return api.SummarizeBilledWorkResponse(projects=summaries)

    async def ListBillingExceptions(
        self, request: api.ListBillingExceptionsRequest, context: Context
    ) -> api.ListBillingExceptionsResponse:
        filters = {
            "status": _enum_name(bl.BillingExceptionStatus, request.status, "BILLING_EXCEPTION_STATUS_"),
            "kind": _enum_name(bl.BillingExceptionKind, request.kind, "BILLING_EXCEPTION_KIND_"),
        }
        found, token = await self.app.list_exceptions(
            filters, request.page_size, request.page_token, by=current_principal(context)
        )
        return api.ListBillingExceptionsResponse(billing_exceptions=found, next_page_token=token)

    async def GetBillingException(
        self, request: api.GetBillingExceptionRequest, context: Context
    ) -> api.GetBillingExceptionResponse:
        return api.GetBillingExceptionResponse(
            billing_exception=await self.app.get_exception(request.id, by=current_principal(context))
        )

    async def ResolveBillingException(
        self, request: api.ResolveBillingExceptionRequest, context: Context
    ) -> api.ResolveBillingExceptionResponse:
        actor = acting_principal(context, request.actor_id, "actor_id")
        resolved = await self.app.resolve_exception(request.id, request.resolution, request.note, by=actor)
        return api.ResolveBillingExceptionResponse(billing_exception=resolved)


def _hours(rows: list[Any]) -> str:
    return format_decimal(sum((Decimal(r.hours) for r in rows), Decimal(0)), 2)


def _status(name: str | None) -> bl.InvoiceStatus.ValueType:
    return bl.InvoiceStatus.Value(f"INVOICE_STATUS_{name}") if name else bl.INVOICE_STATUS_UNSPECIFIED
