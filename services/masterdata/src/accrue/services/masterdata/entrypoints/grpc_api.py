"""gRPC entrypoint: decode the request, call the use case, encode the reply. No rules here.

Every entity has the same seven RPCs (Create, Get, List, Update, Deactivate, BatchUpsert and
List…Changes), so the methods are generated from the Kind table rather than written out 91
times; the generated servicer base class keeps the names honest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.money import format_decimal, format_money
from accrue.runtime.errors import PermissionDenied, Violation
from accrue.runtime.grpc_types import Context
from accrue.runtime.identity import acting_principal
from accrue.services.masterdata.domain import access
from accrue.services.masterdata.domain.kinds import KINDS, Kind
from accrue.services.masterdata.service_layer.handlers import HistoryEntry, MasterData, Writer
from accrue.type.v1 import types_pb2

_NOT_FILTERS = ("page_size", "page_token", "show_deactivated")
_OUTCOMES = {
    "CREATED": api.UPSERT_OUTCOME_CREATED,
    "UPDATED": api.UPSERT_OUTCOME_UPDATED,
    "UNCHANGED": api.UPSERT_OUTCOME_UNCHANGED,
    "REJECTED": api.UPSERT_OUTCOME_REJECTED,
}
_CHANGE_KINDS = {
    "CREATED": api.CHANGE_KIND_CREATED,
    "UPDATED": api.CHANGE_KIND_UPDATED,
    "DEACTIVATED": api.CHANGE_KIND_DEACTIVATED,
    "COMPLETED": api.CHANGE_KIND_COMPLETED,
}

Method = Callable[[Any, Any, Context], Awaitable[Message]]


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))


def _filters(request: Message) -> dict[str, Any]:
    """The list filters that were given, as column → value (enums by name)."""
    filters: dict[str, Any] = {}
    for field in request.DESCRIPTOR.fields:
        if field.name in _NOT_FILTERS:
            continue
        value = getattr(request, field.name)
        if not value:
            continue
        if field.enum_type is not None:
            value = field.enum_type.values_by_number[value].name
        filters[field.name] = value
    return filters


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def writer(context: Context, request: Any, reason: str = "") -> Writer:
    """Who writes, from where: both from the verified principal, never from the request alone.

    An integration client writes as the system of record it is; a person writes as "api", in
    single writes and batch upserts alike (a row's external_ref.system claims nothing). A
    request that names another source (or another actor) is refused, naming the field.
    """
    principal = acting_principal(context, request.actor, "actor")
    if request.source and request.source != principal.system:
        raise PermissionDenied(
            f"source {request.source!r} is not the caller's system",
            [Violation("source", "NOT_THE_CALLER", "source comes from the integration client's identity")],
            reason="SOURCE_MISMATCH",
        )
    return Writer(
        actor=principal.subject,
        source=access.source_of(principal),
        request_id=_request_id(context),
        reason=reason,
    )


def _change(kind: Kind, entry: HistoryEntry, record_id: str) -> api.ResourceChange:
    change = api.ResourceChange(
        resource_type=kind.name,
        resource_id=record_id,
        etag=str(entry.version),
        kind=_CHANGE_KINDS[entry.kind],
        actor=entry.actor,
        source=entry.source,
        changed_fields=entry.changed_fields,
        reason=entry.reason,
        request_id=entry.request_id,
    )
    change.change_time.FromDatetime(entry.change_time)
    getattr(change.after, kind.name).CopyFrom(entry.after)
    if entry.before is not None:
        getattr(change.before, kind.name).CopyFrom(entry.before)
    return change


def _methods(kind: Kind) -> dict[str, Method]:
    singular, plural = kind.message.DESCRIPTOR.name, _pascal(kind.plural)
    create_response = getattr(api, f"Create{singular}Response")
    get_response = getattr(api, f"Get{singular}Response")
    list_response = getattr(api, f"List{plural}Response")
    update_response = getattr(api, f"Update{singular}Response")
    deactivate_response = getattr(api, f"Deactivate{singular}Response")
    changes_response = getattr(api, f"List{singular}ChangesResponse")
    upsert_response = getattr(api, f"BatchUpsert{plural}Response")
    upsert_result = getattr(api, f"{singular}UpsertResult")

    async def create(self: MasterDataServicer, request: Any, context: Context) -> Message:
        record = await self.app.create(kind, getattr(request, kind.name), writer(context, request))
        return create_response(**{kind.name: record})  # type: ignore[no-any-return]

    async def get(self: MasterDataServicer, request: Any, context: Context) -> Message:
        return get_response(**{kind.name: await self.app.get(kind, request.id)})  # type: ignore[no-any-return]

    async def list_(self: MasterDataServicer, request: Any, context: Context) -> Message:
        records, token = await self.app.list_records(
            kind, _filters(request), request.page_size, request.page_token, request.show_deactivated
        )
        return list_response(**{kind.plural: records, "next_page_token": token})  # type: ignore[no-any-return]

    async def update(self: MasterDataServicer, request: Any, context: Context) -> Message:
        record = await self.app.update(
            kind,
            request.id,
            getattr(request, kind.name),
            list(request.update_mask.paths),
            writer(context, request),
        )
        return update_response(**{kind.name: record})  # type: ignore[no-any-return]

    async def deactivate(self: MasterDataServicer, request: Any, context: Context) -> Message:
        record = await self.app.deactivate(
            kind, request.id, request.etag, writer(context, request, reason=request.reason)
        )
        return deactivate_response(**{kind.name: record})  # type: ignore[no-any-return]

    async def changes(self: MasterDataServicer, request: Any, context: Context) -> Message:
        entries, token = await self.app.changes(kind, request.id, request.page_size, request.page_token)
        return changes_response(  # type: ignore[no-any-return]
            changes=[_change(kind, e, request.id) for e in entries], next_page_token=token
        )

    async def upsert(self: MasterDataServicer, request: Any, context: Context) -> Message:
        results = await self.app.batch_upsert(
            kind, list(getattr(request, kind.plural)), writer(context, request)
        )
        return upsert_response(  # type: ignore[no-any-return]
            results=[
                upsert_result(
                    outcome=_OUTCOMES[r.outcome],
                    reasons=[
                        types_pb2.Violation(field=v.field, code=v.code, message=v.message) for v in r.reasons
                    ],
                    **({kind.name: r.record} if r.record is not None else {}),
                )
                for r in results
            ]
        )

    return {
        f"Create{singular}": create,
        f"Get{singular}": get,
        f"List{plural}": list_,
        f"Update{singular}": update,
        f"Deactivate{singular}": deactivate,
        f"List{singular}Changes": changes,
        f"BatchUpsert{plural}": upsert,
    }


class MasterDataServicer(api_grpc.MasterDataServiceServicer):
    """The MasterDataService RPCs."""

    def __init__(self, app: MasterData) -> None:
        self.app = app

    async def ResolveRate(self, request: api.ResolveRateRequest, context: Context) -> api.ResolveRateResponse:
        found = await self.app.resolve_rate(
            request.project_id, request.consultant_id, request.labor_category_id, request.date
        )
        entry = found.entry
        return api.ResolveRateResponse(
            rate=format_money(entry.rate, found.currency),
            currency=found.currency,
            rate_card_id=found.rate_card_id,
            rate_card_entry_id=entry.id,
            contract_id=found.contract.id,
            contract_line_id=found.line.id,
            billing_model=found.line.billing_model,
            effective_from=entry.effective_from.isoformat(),
            effective_to=entry.effective_to.isoformat() if entry.effective_to else "",
            consultant_override=entry.consultant_id is not None,
            entry=found.entry_message,
        )

    async def CompleteMilestone(
        self, request: api.CompleteMilestoneRequest, context: Context
    ) -> api.CompleteMilestoneResponse:
        milestone = await self.app.complete_milestone(request.id, request.etag, writer(context, request))
        return api.CompleteMilestoneResponse(milestone=milestone)

    async def ConvertAmount(
        self, request: api.ConvertAmountRequest, context: Context
    ) -> api.ConvertAmountResponse:
        found = await self.app.convert_amount(
            request.amount, request.from_currency, request.to_currency, request.date
        )
        return api.ConvertAmountResponse(
            amount=format_money(found.amount, found.currency),
            exact_amount=format_decimal(found.exact_amount),
            currency=found.currency,
            rate=format_decimal(found.rate),
            fx_rate=found.fx_rate,
        )

    async def ResolveTaxRate(
        self, request: api.ResolveTaxRateRequest, context: Context
    ) -> api.ResolveTaxRateResponse:
        found = await self.app.resolve_tax_rate(
            request.tax_code, request.date, request.amount, request.currency
        )
        return api.ResolveTaxRateResponse(
            rate=format_decimal(found.rate),
            tax_rate=found.tax_rate,
            tax_amount=format_money(found.tax_amount, request.currency)
            if found.tax_amount is not None
            else "",
        )


for _kind in KINDS.values():
    for _name, _method in _methods(_kind).items():
        setattr(MasterDataServicer, _name, _method)
