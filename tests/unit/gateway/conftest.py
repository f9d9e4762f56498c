"""Fixtures for the gateway's unit tests: in-process gRPC fakes on port 0 and clients on the app.

The fakes are built from the generated servicers and record what reached them (request and
metadata), so tests assert on what the gateway actually sent; they can be told to fail with a
rich google.rpc.Status or to stall. (Test modules are imported in importlib mode, so they take
everything from fixtures and import names from here only for type checking.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from accrue.masterdata.v1 import masterdata_service_pb2 as md
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from accrue.masterdata.v1 import resources_pb2 as md_res
from accrue.services.gateway.bootstrap import build_app
from accrue.services.gateway.settings import GatewaySettings
from accrue.telemetry import configure_tracing
from accrue.testing.identity import InProcessIssuer
from accrue.timekeeping.v1 import resources_pb2 as tk_res
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as tk_grpc

MASTERDATA = "accrue.masterdata.v1.MasterDataService"
TIMEKEEPING = "accrue.timekeeping.v1.TimekeepingService"


@dataclass
class Seen:
    """One RPC as the backend received it."""

    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class Recorder:
    """What the fake backends saw, and how they should misbehave next."""

    calls: list[Seen] = field(default_factory=list)
    fail: dict[str, status_pb2.Status] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def last(self, method: str) -> Seen:
        matching = [c for c in self.calls if c.method == method]
        assert matching, f"{method} was never called; saw {[c.method for c in self.calls]}"
        return matching[-1]

    async def enter(self, method: str, request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        self.calls.append(Seen(method, request, {k: v for k, v in metadata.items() if isinstance(v, str)}))
        if method in self.delay:
            await asyncio.sleep(self.delay[method])
        status = self.fail.get(method)
        if status is not None:
            await context.abort_with_status(rpc_status.to_status(status))


class FakeMasterData(md_grpc.MasterDataServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder

    async def CreateLegalEntity(self, request: Any, context: Any) -> Any:
        await self.rec.enter("CreateLegalEntity", request, context)
        entity = md_res.LegalEntity()
        entity.CopyFrom(request.legal_entity)
        entity.id = "le-1"
        entity.create_time.FromSeconds(1_700_000_000)
        return md.CreateLegalEntityResponse(legal_entity=entity)

    async def GetProject(self, request: Any, context: Any) -> Any:
        await self.rec.enter("GetProject", request, context)
        project = md_res.Project(id=request.id, code="P-1", status=md_res.PROJECT_STATUS_ACTIVE)
        return md.GetProjectResponse(project=project)

    async def ListProjects(self, request: Any, context: Any) -> Any:
        await self.rec.enter("ListProjects", request, context)
        projects = [md_res.Project(id="p-1", code="P-1", status=request.status)]
        return md.ListProjectsResponse(projects=projects, next_page_token="")

    async def ListConsultants(self, request: Any, context: Any) -> Any:
        await self.rec.enter("ListConsultants", request, context)
        # One HR worker id the fakes know: W-42 in workday is consultant c-42.
        known = (request.external_ref_system, request.external_ref_id) == ("workday", "W-42")
        consultants = [md_res.Consultant(id="c-42", code="C42")] if known else []
        return md.ListConsultantsResponse(consultants=consultants)

    async def BatchUpsertLegalEntities(self, request: Any, context: Any) -> Any:
        await self.rec.enter("BatchUpsertLegalEntities", request, context)
        results = [
            md.LegalEntityUpsertResult(outcome=md.UPSERT_OUTCOME_CREATED, legal_entity=row)
            for row in request.legal_entities
        ]
        return md.BatchUpsertLegalEntitiesResponse(results=results)

    async def ResolveRate(self, request: Any, context: Any) -> Any:
        await self.rec.enter("ResolveRate", request, context)
        return md.ResolveRateResponse(
            rate="150.00",
            currency="EUR",
            rate_card_id="rc-1",
            billing_model=md_res.BILLING_MODEL_TIME_AND_MATERIALS,
            consultant_override=True,
        )


class FakeTimekeeping(tk_grpc.TimekeepingServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder

    async def SubmitTimeEntry(self, request: Any, context: Any) -> Any:
        await self.rec.enter("SubmitTimeEntry", request, context)
        entry = tk_res.TimeEntry()
        entry.CopyFrom(request.time_entry)
        entry.id = "te-1"
        entry.status = tk_res.TIME_ENTRY_STATUS_PENDING_APPROVAL
        return tk.SubmitTimeEntryResponse(time_entry=entry)

    async def BatchSubmitTimeEntries(self, request: Any, context: Any) -> Any:
        await self.rec.enter("BatchSubmitTimeEntries", request, context)
        results = []
        for i, submitted in enumerate(request.time_entries):
            entry = tk_res.TimeEntry()
            entry.CopyFrom(submitted)
            entry.id = f"te-{i}"
            entry.status = tk_res.TIME_ENTRY_STATUS_PENDING_APPROVAL
            results.append(tk.TimeEntrySubmitResult(time_entry=entry))
        return tk.BatchSubmitTimeEntriesResponse(results=results)

    async def ApproveTimeEntry(self, request: Any, context: Any) -> Any:
        await self.rec.enter("ApproveTimeEntry", request, context)
        entry = tk_res.TimeEntry(
            id=request.id, approver_id=request.approver_id, status=tk_res.TIME_ENTRY_STATUS_APPROVED
        )
        return tk.ApproveTimeEntryResponse(time_entry=entry)

    async def ListTimeEntries(self, request: Any, context: Any) -> Any:
        await self.rec.enter("ListTimeEntries", request, context)
        return tk.ListTimeEntriesResponse(time_entries=[tk_res.TimeEntry(id="te-1")], next_page_token="next")


@dataclass
class FakeBackends:
    """One gRPC server hosting both fakes and the standard health service."""

    address: str
    recorder: Recorder
    health: health.aio.HealthServicer


@pytest.fixture(scope="session")
async def fake_backends() -> AsyncIterator[FakeBackends]:
    # Spans are recorded (SDK provider), so the gateway's server and client spans are real.
    configure_tracing("gateway-unit-tests")
    recorder = Recorder()
    server = grpc.aio.server()
    md_grpc.add_MasterDataServiceServicer_to_server(FakeMasterData(recorder), server)
    tk_grpc.add_TimekeepingServiceServicer_to_server(FakeTimekeeping(recorder), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    for name in (MASTERDATA, TIMEKEEPING):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    yield FakeBackends(f"127.0.0.1:{port}", recorder, health_servicer)
    await server.stop(None)


@pytest.fixture
def recorder(fake_backends: FakeBackends) -> Recorder:
    """The fakes' recorder, emptied for this test."""
    fake_backends.recorder.calls.clear()
    fake_backends.recorder.fail.clear()
    fake_backends.recorder.delay.clear()
    return fake_backends.recorder


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
def issuer(tmp_path_factory: pytest.TempPathFactory) -> InProcessIssuer:
    """The local issuer the in-process gateways verify tokens of. Per test: its clock starts at
    the run's instant with the test, as the gateway's does (the same start, so no skew)."""
    return InProcessIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture
async def make_client(fake_backends: FakeBackends, issuer: InProcessIssuer) -> AsyncIterator[ClientFactory]:
    """Builds a gateway app with given settings and an HTTP client on it; closes both after.

    The client acts as whoever each request names, with tokens from `issuer`; pass
    auth=None for a client that sends no token."""
    opened: list[tuple[httpx.AsyncClient, Any]] = []

    def make(
        build_kwargs: dict[str, Any] | None = None, auth: Any = "named", **overrides: Any
    ) -> httpx.AsyncClient:
        values: dict[str, Any] = {
            "backends": {MASTERDATA: fake_backends.address, TIMEKEEPING: fake_backends.address},
            **issuer.settings,
        }
        values.update(overrides)
        app = build_app(GatewaySettings(**values), **{"http": issuer.http, **(build_kwargs or {})})
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            auth=issuer.auth() if auth == "named" else auth,
        )
        opened.append((client, app))
        return client

    yield make
    for client, app in opened:
        await client.aclose()
        # The lifespan closes channels under uvicorn; ASGITransport runs no lifespan.
        async with app.router.lifespan_context(app):
            pass


@pytest.fixture
async def client(make_client: ClientFactory, recorder: Recorder) -> httpx.AsyncClient:
    """A client on a gateway whose two backends are the fakes."""
    return make_client()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
