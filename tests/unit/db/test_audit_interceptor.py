"""The audit interceptor's naming rules and the aggregator's paging across services."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from accrue.audit.v1 import audit_service_pb2 as pb
from accrue.db.audit_api import AuditAggregator, Query, decode_token, encode_token
from accrue.db.audit_interceptor import _find, is_read_only, resource_type_of
from accrue.masterdata.v1 import masterdata_service_pb2 as md_api
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.errors import InvalidArgument
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tk_api


@pytest.mark.parametrize(
    ("method", "resource"),
    [
        ("/accrue.timekeeping.v1.TimekeepingService/ApproveTimeEntry", "time_entry"),
        ("accrue.masterdata.v1.MasterDataService/BatchUpsertConsultants", "consultants"),
        ("accrue.billing.v1.BillingService/CreateBillingRun", "billing_run"),
        ("accrue.masterdata.v1.MasterDataService/CreateFxRate", "fx_rate"),
    ],
)
def test_resource_type_comes_from_the_method_name(method: str, resource: str) -> None:
    assert resource_type_of(method) == resource


def test_reads_are_known_by_their_contract_mark() -> None:
    assert is_read_only("/accrue.timekeeping.v1.TimekeepingService/GetTimeEntry")
    assert not is_read_only("/accrue.timekeeping.v1.TimekeepingService/ApproveTimeEntry")
    assert not is_read_only("/accrue.billing.v1.BillingService/ResolveBillingException")
    # An unknown method counts as a write: recording too much is the safe mistake.
    assert not is_read_only("/nowhere.v1.Nothing/GetThing")


def test_the_resource_id_comes_from_the_request_else_the_reply() -> None:
    approve = tk_api.ApproveTimeEntryRequest(id="entry-1")
    assert _find([approve, None], "id") == "entry-1"
    create = md_api.CreateCustomerRequest(customer=md.Customer(code="C", legal_entity_id="le-1"))
    reply = md_api.CreateCustomerResponse(customer=md.Customer(id="cu-9", legal_entity_id="le-1"))
    assert _find([create, reply], "id") == "cu-9"
    assert _find([create, reply], "legal_entity_id") == "le-1"


def test_a_page_token_round_trips_and_junk_is_refused() -> None:
    assert decode_token(encode_token(41)) == 41
    with pytest.raises(InvalidArgument):
        decode_token("not a token")


class FakeTrail:
    """One service's trail: events with seq 1..n, newest first, at the given instants."""

    def __init__(self, name: str, instants: list[int]) -> None:
        self.events = []
        for seq, second in enumerate(instants, start=1):
            event = pb.AuditEvent(service=name, seq=seq, operation=f"{name}/{seq}")
            event.occur_time.FromDatetime(
                dt.datetime(2027, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=second)
            )
            self.events.append(event)

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, *, timeout: Any = None) -> Any:  # noqa: ASYNC109
        below = decode_token(request.page_token) if request.page_token else 10**9
        newest_first = [e for e in reversed(self.events) if e.seq < below]
        page = newest_first[: request.page_size]
        more = len(newest_first) > request.page_size
        return pb.ListAuditEventsResponse(
            events=page, next_page_token=encode_token(page[-1].seq) if more else ""
        )

    async def VerifyAuditTrail(self, request: Any, *, timeout: Any = None) -> Any:  # noqa: ASYNC109
        return pb.VerifyAuditTrailResponse(ok=True, events=len(self.events))


async def test_pages_across_services_are_newest_first_and_miss_nothing() -> None:
    trails = {
        "a": FakeTrail("a", [1, 4, 5, 9]),
        "b": FakeTrail("b", [2, 3, 6, 7, 8]),
        "c": FakeTrail("c", []),
    }
    aggregator = AuditAggregator(trails)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await aggregator.list_events(Query(legal_entity_ids=None), 2, token)
        seen.extend(e.operation for e in page.events)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a/4", "b/5", "b/4", "b/3", "a/3", "a/2", "b/2", "b/1", "a/1"]


async def test_a_caller_who_sees_no_legal_entity_gets_nothing_and_an_unknown_service_is_refused() -> None:
    aggregator = AuditAggregator({"a": FakeTrail("a", [1])})
    assert list((await aggregator.list_events(Query(legal_entity_ids=[]), 10, "")).events) == []
    with pytest.raises(InvalidArgument):
        await aggregator.list_events(Query(legal_entity_ids=None), 10, "", service="nope")
