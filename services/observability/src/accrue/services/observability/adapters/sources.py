"""What timekeeping and billing report about a period, read over their gRPC contracts."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.money import parse_decimal
from accrue.services.observability.domain.reconciliation import ApprovedEntry, BilledEntry
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tka
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as tkg

# A reconciliation may cover many entries; give the other services time to answer.
TIMEOUT_SECONDS = 60.0


class StageSources(Protocol):
    """The stages observability does not hold itself."""

    async def approved(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[ApprovedEntry]: ...

    async def billed(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[BilledEntry]: ...


class GrpcStageSources:
    """Timekeeping's SummarizeApprovedTime and billing's SummarizeBilledWork."""

    def __init__(
        self, timekeeping: tkg.TimekeepingServiceAsyncStub, billing: blg.BillingServiceAsyncStub
    ) -> None:
        self._tk = timekeeping
        self._bl = billing

    async def approved(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[ApprovedEntry]:
        reply = await self._tk.SummarizeApprovedTime(
            tka.SummarizeApprovedTimeRequest(
                period_start=start.isoformat(), period_end=end.isoformat(), legal_entity_id=legal_entity_id
            ),
            timeout=TIMEOUT_SECONDS,
        )
        return [
            ApprovedEntry(
                e.time_entry_id, p.project_id, p.legal_entity_id, parse_decimal(e.hours), e.billable
            )
            for p in reply.projects
            for e in p.entries
        ]

    async def billed(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[BilledEntry]:
        reply = await self._bl.SummarizeBilledWork(
            bla.SummarizeBilledWorkRequest(
                period_start=start.isoformat(), period_end=end.isoformat(), legal_entity_id=legal_entity_id
            ),
            timeout=TIMEOUT_SECONDS,
        )
        return [
            BilledEntry(
                e.time_entry_id,
                p.project_id,
                p.legal_entity_id,
                parse_decimal(e.hours),
                e.billable,
                e.invoice_status == bl.INVOICE_STATUS_POSTED,
            )
            for p in reply.projects
            for e in p.entries
        ]
