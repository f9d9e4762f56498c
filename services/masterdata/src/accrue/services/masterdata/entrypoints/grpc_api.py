"""gRPC entrypoint: decode the request, call the use case, encode the reply. No rules here.

Every entity has the same four RPCs, so the methods are generated from the Kind table rather
than written out 48 times; the generated servicer base class keeps the names honest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.money import format_money
from accrue.runtime.grpc_types import Context
from accrue.services.masterdata.domain.kinds import KINDS, Kind
from accrue.services.masterdata.service_layer.handlers import MasterData
from accrue.type.v1 import types_pb2

_PAGING = ("page_size", "page_token")
_OUTCOMES = {
    "CREATED": api.UPSERT_OUTCOME_CREATED,
    "UPDATED": api.UPSERT_OUTCOME_UPDATED,
    "UNCHANGED": api.UPSERT_OUTCOME_UNCHANGED,
    "REJECTED": api.UPSERT_OUTCOME_REJECTED,
}

Method = Callable[[Any, Any, Context], Awaitable[Message]]


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))


def _filters(request: Message) -> dict[str, Any]:
    """The list filters that were given, as column → value (enums by name)."""
    filters: dict[str, Any] = {}
    for field in request.DESCRIPTOR.fields:
        if field.name in _PAGING:
            continue
        value = getattr(request, field.name)
        if not value:
            continue
        if field.enum_type is not None:
            value = field.enum_type.values_by_number[value].name
        filters[field.name] = value
    return filters


def _methods(kind: Kind) -> dict[str, Method]:
    singular, plural = kind.message.DESCRIPTOR.name, _pascal(kind.plural)
    create_response = getattr(api, f"Create{singular}Response")
    get_response = getattr(api, f"Get{singular}Response")
    list_response = getattr(api, f"List{plural}Response")
    upsert_response = getattr(api, f"BatchUpsert{plural}Response")
    upsert_result = getattr(api, f"{singular}UpsertResult")

    async def create(self: MasterDataServicer, request: Any, context: Context) -> Message:
        record = await self.app.create(kind, getattr(request, kind.name))
        return create_response(**{kind.name: record})  # type: ignore[no-any-return]

    async def get(self: MasterDataServicer, request: Any, context: Context) -> Message:
        return get_response(**{kind.name: await self.app.get(kind, request.id)})  # type: ignore[no-any-return]

    async def list_(self: MasterDataServicer, request: Any, context: Context) -> Message:
        records, token = await self.app.list_records(
            kind, _filters(request), request.page_size, request.page_token
        )
        return list_response(**{kind.plural: records, "next_page_token": token})  # type: ignore[no-any-return]

    async def upsert(self: MasterDataServicer, request: Any, context: Context) -> Message:
        results = await self.app.batch_upsert(kind, list(getattr(request, kind.plural)))
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
        )


for _kind in KINDS.values():
    for _name, _method in _methods(_kind).items():
        setattr(MasterDataServicer, _name, _method)
