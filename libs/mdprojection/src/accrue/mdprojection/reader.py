"""Read master data locally, falling back to the master data service on a miss."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import cast

import grpc
import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection.store import ProjectionStore
from accrue.runtime import Unavailable
from accrue.telemetry import get_logger

log = get_logger(__name__)

# How many single reads a lookup keeps in flight to master data at once.
MAX_CONCURRENT_FETCHES = 16

# gRPC getter per kind: (method name, request class, response field).
_GETTERS = {
    "legal_entity": ("GetLegalEntity", api.GetLegalEntityRequest),
    "customer": ("GetCustomer", api.GetCustomerRequest),
    "labor_category": ("GetLaborCategory", api.GetLaborCategoryRequest),
    "consultant": ("GetConsultant", api.GetConsultantRequest),
    "project": ("GetProject", api.GetProjectRequest),
    "rate_card": ("GetRateCard", api.GetRateCardRequest),
    "contract": ("GetContract", api.GetContractRequest),
    "milestone": ("GetMilestone", api.GetMilestoneRequest),
    "assignment": ("GetAssignment", api.GetAssignmentRequest),
    "opportunity": ("GetOpportunity", api.GetOpportunityRequest),
    "fx_rate": ("GetFxRate", api.GetFxRateRequest),
    "tax_rate": ("GetTaxRate", api.GetTaxRateRequest),
    "calendar": ("GetCalendar", api.GetCalendarRequest),
}


class MasterDataReader:
    """Local projection first; gRPC to master data for what is not there yet (stored on the way)."""

    def __init__(self, stub: api_grpc.MasterDataServiceStub, table: sa.Table, timeout: float = 5.0) -> None:
        self._stub = stub
        self._table = table
        self._timeout = timeout

    async def records(self, conn: AsyncConnection, kind: str, ids: Iterable[str]) -> dict[str, Message]:
        """Records of a kind by id; ids master data does not know are absent."""
        wanted = {i for i in ids if i}
        store = ProjectionStore(conn, self._table)
        found = await store.get_many(kind, wanted)
        missing = sorted(wanted - found.keys())
        # Master data has no batch read: one call per id, but side by side, so a batch naming
        # many ids not projected yet waits about one round trip instead of one per id. The
        # writes stay one after another (one connection). Nothing remembers an id master data
        # does not know: it may be created a moment later.
        fetched = await self._fetch_all(kind, missing)
        for record_id, record in zip(missing, fetched, strict=True):
            if record is not None:
                await store.upsert(kind, record)
                found[record_id] = record
        return found

    async def assignments(
        self, conn: AsyncConnection, project_id: str, consultant_id: str
    ) -> list[md.Assignment]:
        """The consultant's assignments on the project."""
        store = ProjectionStore(conn, self._table)
        local = [
            a
            for a in await store.by_project("assignment", [project_id])
            if isinstance(a, md.Assignment) and a.consultant_id == consultant_id
        ]
        if local:
            return local
        reply = await self._call(
            "ListAssignments",
            api.ListAssignmentsRequest(project_id=project_id, consultant_id=consultant_id, page_size=1000),
        )
        remote: list[md.Assignment] = list(getattr(reply, "assignments", []))
        for assignment in remote:
            await store.upsert("assignment", assignment)
        return remote

    async def contract_line(
        self, conn: AsyncConnection, project_id: str
    ) -> tuple[md.ContractLine, md.Contract] | None:
        """The line billing the project and its contract, or None."""
        store = ProjectionStore(conn, self._table)
        lines = await store.by_project("contract_line", [project_id])
        if not lines:
            reply = await self._call(
                "ListContracts", api.ListContractsRequest(project_id=project_id, page_size=10)
            )
            for contract in getattr(reply, "contracts", []):
                await store.upsert("contract", contract)
            lines = await store.by_project("contract_line", [project_id])
        if not lines:
            return None
        line = lines[0]
        assert isinstance(line, md.ContractLine)
        contract = await self._contract_of(conn, line)
        return (line, contract) if contract is not None else None

    async def fx_rates(self, conn: AsyncConnection, base: str, quote: str) -> list[md.FxRate]:
        """Every FX rate for the pair, any date."""
        return [
            r
            for r in await self._all(
                conn, "fx_rate", "ListFxRates", api.ListFxRatesRequest(base=base, quote=quote)
            )
            if isinstance(r, md.FxRate) and r.base == base and r.quote == quote
        ]

    async def tax_rates(self, conn: AsyncConnection, tax_code: str) -> list[md.TaxRate]:
        """Every rate of the tax code, any date."""
        return [
            r
            for r in await self._all(
                conn, "tax_rate", "ListTaxRates", api.ListTaxRatesRequest(tax_code=tax_code)
            )
            if isinstance(r, md.TaxRate) and r.tax_code == tax_code
        ]

    async def _all(self, conn: AsyncConnection, kind: str, method: str, request: Message) -> list[Message]:
        """Small reference kinds: the local copy, or master data's list when there is none yet."""
        store = ProjectionStore(conn, self._table)
        local = await store.all(kind)
        matching = [r for r in local if _matches(r, request)]
        if matching:
            return matching
        request.page_size = 1000  # type: ignore[attr-defined]
        reply = await self._call(method, request)
        remote = list(getattr(reply, f"{kind}s")) if reply is not None else []
        for record in remote:
            await store.upsert(kind, record)
        return remote

    async def _contract_of(self, conn: AsyncConnection, line: md.ContractLine) -> md.Contract | None:
        t = self._table
        parent = await conn.scalar(
            sa.select(t.c.parent_id).where(t.c.kind == "contract_line", t.c.id == line.id)
        )
        if parent is None:
            return None
        found = await self.records(conn, "contract", [parent])
        contract = found.get(parent)
        return contract if isinstance(contract, md.Contract) else None

    async def _fetch_all(self, kind: str, record_ids: Sequence[str]) -> list[Message | None]:
        if len(record_ids) <= 1:
            return [await self._fetch(kind, i) for i in record_ids]
        gate = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

        async def one(record_id: str) -> Message | None:
            async with gate:
                return await self._fetch(kind, record_id)

        tasks = [asyncio.ensure_future(one(i)) for i in record_ids]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            # One failed (master data unavailable): the rest are not waited for.
            for task in tasks:
                task.cancel()
            raise

    async def _fetch(self, kind: str, record_id: str) -> Message | None:
        method, request_cls = _GETTERS[kind]
        reply = await self._call(method, request_cls(id=record_id))
        return cast(Message, getattr(reply, kind)) if reply is not None else None

    async def _call(self, method: str, request: Message) -> Message | None:
        try:
            reply: Message = await getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            log.warning("masterdata_unavailable", method=method, code=exc.code().name, details=exc.details())
            raise Unavailable(f"master data did not answer {method}: {exc.details()}") from exc
        return reply


def _matches(record: Message, request: Message) -> bool:
    """True when record has every non-empty filter field of request (base, quote, tax_code)."""
    for field in ("base", "quote", "tax_code"):
        wanted = getattr(request, field, "")
        if wanted and getattr(record, field, None) != wanted:
            return False
    return True
