"""Observability's legal-entity scope, with explicit principals: KPIs (per entity and the totals
made of them) and reconciliation hold only the caller's legal entities; roles the policy does
not list are refused."""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message

from accrue.db import create_engine
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.observability.v1 import observability_service_pb2 as api
from accrue.observability.v1 import observability_service_pb2_grpc as api_grpc
from accrue.runtime import audit
from accrue.runtime.clock import FixedClock
from accrue.runtime.identity import Principal, bound_principal
from accrue.runtime.server import RunningService
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.bootstrap import migrate
from accrue.services.observability.domain.reconciliation import ApprovedEntry, BilledEntry
from accrue.services.observability.service_layer.handlers import Observability
from accrue.services.observability.settings import ObservabilitySettings
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

A, B = "le-a", "le-b"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def publish(js: Any, at: dt.datetime, event_type: str, key: str, message: Message) -> None:
    await js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": str(uuid.uuid4()),
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": at.isoformat(),
        },
    )


def approved(at: dt.datetime, le: str, hours: str) -> tk.TimeEntry:
    e = tk.TimeEntry(
        id=str(uuid.uuid4()),
        project_id=f"proj-{le}",
        legal_entity_id=le,
        work_date=at.date().isoformat(),
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        indicative_rate=types_pb2.Money(currency="GBP", amount="100.00"),
    )
    e.approve_time.FromDatetime(at - dt.timedelta(hours=2))
    e.create_time.FromDatetime(at - dt.timedelta(hours=3))
    return e


@pytest.fixture
async def env(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    nats_url: str,
    internal_signer: Any,
    instant: dt.datetime,
) -> AsyncIterator[dict[str, Any]]:
    service = await start_service(
        "observability", metrics_interval_seconds=0.2, reconciliation_interval_seconds=0, clock_start=instant
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for le, hours in ((A, "3"), (B, "5")):
        e = approved(instant, le, hours)
        await publish(js, instant, "time.entry.approved", e.project_id, tev.TimeEntryApproved(time_entry=e))
    version = fev.ForecastVersionPublished(
        version_id="v1",
        totals=[
            fev.ForecastVersionTotal(
                legal_entity_id=le, month=f"{instant:%Y-%m}", currency="GBP", forecast_revenue=amount
            )
            for le, amount in ((A, "1000.00"), (B, "2000.00"))
        ],
    )
    version.create_time.FromDatetime(instant)
    await publish(js, instant, "forecast.version.published", "v1", version)
    admin = api_grpc.ObservabilityServiceStub(channel_to(service))

    async def all_in() -> bool:
        kpis = (await admin.GetKpis(api.GetKpisRequest())).kpis
        return kpis.unbilled_approved_hours == "8.00" and len(kpis.forecast_variance) == 2

    await eventually(all_in)
    channels: list[grpc.aio.Channel] = []

    def as_(principal: Principal) -> api_grpc.ObservabilityServiceStub:
        channels.append(identity.channel(f"127.0.0.1:{service.grpc_port}", internal_signer, principal))
        return api_grpc.ObservabilityServiceStub(channels[-1])

    yield {"admin": admin, "as_": as_}
    for channel in channels:
        await channel.close()
    await nc.close()


async def test_legal_entity_scope_kpis_and_their_totals_hold_only_the_callers_entities(
    env: dict[str, Any],
) -> None:
    everything = (await env["admin"].GetKpis(api.GetKpisRequest())).kpis
    assert {k.legal_entity_id for k in everything.by_legal_entity} == {A, B}
    viewer = env["as_"](identity.person("v1", "viewer", legal_entities=[A]))
    mine = (await viewer.GetKpis(api.GetKpisRequest())).kpis
    assert [k.legal_entity_id for k in mine.by_legal_entity] == [A]
    assert mine.unbilled_approved_hours == "3.00"
    assert [(m.currency, m.amount) for m in mine.unbilled_approved_value] == [("GBP", "300.00")]
    assert [(v.legal_entity_id, v.latest_forecast) for v in mine.forecast_variance] == [(A, "1000.00")]
    # Naming the other entity shows nothing of it.
    other = (await viewer.GetKpis(api.GetKpisRequest(legal_entity_id=B))).kpis
    assert (list(other.by_legal_entity), other.unbilled_approved_hours, list(other.forecast_variance)) == (
        [],
        "0.00",
        [],
    )


async def test_kpis_need_a_role_the_policy_lists(env: dict[str, Any]) -> None:
    for roles in (("consultant",), ("approver",), ("masterdata_admin",)):
        stub = env["as_"](identity.person("p1", *roles, legal_entities=[A]))
        for call in (
            stub.GetKpis(api.GetKpisRequest()),
            stub.GetReconciliation(
                api.GetReconciliationRequest(period_start="2026-11-01", period_end="2026-11-30")
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, roles


class FakeSources:
    """Timekeeping and billing as they would answer: one entry in each legal entity, approved and
    not billed (so each entity has a difference), and every question they were asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def approved(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[ApprovedEntry]:
        self.asked.append(legal_entity_id)
        return [
            ApprovedEntry(f"t-{le}", f"p-{le}", le, Decimal(2), True)
            for le in (A, B)
            if not legal_entity_id or le == legal_entity_id
        ]

    async def billed(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[BilledEntry]:
        return []


async def test_legal_entity_scope_a_reconciliation_covers_and_records_only_the_callers_entities(
    database_url: str, nats_url: str, instant: dt.datetime
) -> None:
    await migrate(ObservabilitySettings(database_url=database_url, nats_url=nats_url))
    engine = create_engine(database_url)
    sources = FakeSources()
    app = Observability(
        lambda: ObservabilityUnitOfWork(engine), streams=None, sources=sources, clock=FixedClock(instant)
    )  # type: ignore[arg-type]
    try:
        with (
            bound_principal(identity.person("f1", "finance", legal_entities=[A])),
            audit.collecting() as notes,
        ):
            report = await app.reconcile("2026-11-01", "2026-11-30")
            assert [e.legal_entity_id for e in report.legal_entities] == [A]
            assert report.difference_count == 1
            # Another entity named: nothing of it, and the sources are not even asked.
            asked = len(sources.asked)
            other = await app.reconcile("2026-11-01", "2026-11-30", B)
            assert (other.legal_entities, len(sources.asked)) == ([], asked)
        assert [(n.resource_type, n.legal_entity_id, n.after) for n in notes] == [
            (
                "reconciliation",
                A,
                {
                    "period_start": dt.date(2026, 11, 1),
                    "period_end": dt.date(2026, 11, 30),
                    "difference_count": 1,
                },
            )
        ]
        async with engine.connect() as conn:
            recorded = (
                await conn.execute(sa.text("SELECT legal_entity_id FROM observability.reconciliations"))
            ).scalars()
            assert list(recorded) == [A]
            mismatches = await conn.scalar(sa.text("SELECT count(*) FROM observability.outbox"))
            assert mismatches == 1  # A's mismatch only: B's difference was never the caller's to raise
        # The administrator (every entity) reconciles both.
        with bound_principal(identity.admin()):
            both = await app.reconcile("2026-11-01", "2026-11-30")
        assert sorted(e.legal_entity_id for e in both.legal_entities) == [A, B]
    finally:
        await engine.dispose()
