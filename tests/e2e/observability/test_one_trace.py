"""One trace from the REST request through gRPC, the outbox and NATS into every consumer.

The stack's processes export their spans over OTLP (off by default; switched on here by
ACCRUE_OTLP_ENDPOINT) to a tiny OTLP/gRPC receiver in the test. The approval request carries a
caller's traceparent; the gateway, timekeeping and each consumer of time.entry.approved
(billing, forecasting, observability) must all report spans of that one trace, and each
consumer's span must hang under a span timekeeping made while handling the request.
"""

import asyncio
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from accrue.embedded import free_port
from accrue.testing.plugin import TEST_STACK_ENV
from accrue.testing.servers import SecuredNats
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
CONSUMERS = ("billing", "forecasting", "observability")


@dataclasses.dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str


class Receiver(otlp_grpc.TraceServiceServicer):
    """Collects every exported span."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: Any
    ) -> otlp.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                service = attributes.get("service.name", "")
                for scope in resource_spans.scope_spans:
                    for s in scope.spans:
                        self.spans.append(
                            Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex())
                        )
        return otlp.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    otlp_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield collector, port
    server.stop(grace=None)


@pytest.fixture(scope="module")
def stack(
    module_database_url: str,
    module_nats: SecuredNats,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: tuple[Receiver, int],
    instant: dt.datetime,
) -> Iterator[Stack]:
    """The stack (as the plugin's, its clocks started at the pinned instant), every process
    exporting its spans to the receiver."""
    with Stack.from_catalogue(
        database_url=module_database_url,
        nats_url=module_nats.url,
        nats_passwords=module_nats.passwords,
        log_dir=tmp_path_factory.mktemp("traced"),
        clock_start=instant,
        extra_env={**TEST_STACK_ENV, "ACCRUE_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[1]}"},
    ) as running:
        yield running


async def test_one_trace_runs_from_the_gateway_into_every_consumer(
    api: httpx.AsyncClient,
    firm: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: tuple[Receiver, int],
) -> None:
    f = await firm("-otlp")
    entry = (
        await api.post(
            "/v1/time-entries",
            json={
                "consultantId": f["dev"]["id"],
                "projectId": f["project"]["id"],
                "workDate": "2026-11-05",
                "hours": "1",
            },
        )
    ).json()
    approved = await api.post(
        f"/v1/time-entries/{entry['id']}:approve",
        json={"approverId": f["boss"]["id"]},
        headers={"traceparent": TRACEPARENT},
    )
    assert approved.status_code == 200, approved.text
    collector = receiver[0]

    def consumer_spans() -> dict[str, Span]:
        return {
            s.service.removeprefix("accrue-"): s
            for s in collector.of_trace(TRACE_ID)
            if s.name == "consume time.entry.approved"
        }

    # Spans leave each process in batches (every few seconds), each process on its own clock:
    # wait for every process's batch, not only the consumers'.
    expected = {"accrue-gateway", "accrue-timekeeping", *(f"accrue-{c}" for c in CONSUMERS)}
    services: set[str] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            while set(consumer_spans()) != set(CONSUMERS) or not expected <= services:
                await asyncio.sleep(0.2)
                services = {s.service for s in collector.of_trace(TRACE_ID)}

    spans = collector.of_trace(TRACE_ID)
    assert expected <= {s.service for s in spans}
    gateway_root = [
        s for s in spans if s.service == "accrue-gateway" and s.parent_span_id == "b7ad6b7169203331"
    ]
    assert gateway_root, "the gateway's server span continues the caller's trace"
    timekeeping_ids = {s.span_id for s in spans if s.service == "accrue-timekeeping"}
    for name, span in consumer_spans().items():
        assert span.parent_span_id in timekeeping_ids, f"{name}'s span hangs under timekeeping's request"
