"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork, create_engine, fill_pool
from accrue.db.audit_interceptor import SERVICE_NAME as AUDIT_SERVICE_NAME
from accrue.db.audit_interceptor import AuditTrail
from accrue.db.migrations import upgrade
from accrue.db.roles import APP_ROLE
from accrue.eventbus import Backbone, ConsumerRunner, NatsAccess
from accrue.identity.grpc import service_auth
from accrue.masterdata.v1 import masterdata_service_pb2_grpc
from accrue.mdprojection import MasterDataReader
from accrue.runtime import client
from accrue.runtime.clock import Clock, clock_for
from accrue.runtime.server import Service
from accrue.services.timekeeping.adapters import tables
from accrue.services.timekeeping.adapters.replay import masterdata_replay
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.entrypoints.consumers import billing_subscription, masterdata_subscription
from accrue.services.timekeeping.entrypoints.escalation import run_escalations
from accrue.services.timekeeping.entrypoints.grpc_api import TimekeepingServicer
from accrue.services.timekeeping.service_layer.handlers import Replay, Timekeeping
from accrue.services.timekeeping.settings import TimekeepingSettings
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.timekeeping.v1.TimekeepingService"


async def migrate(settings: TimekeepingSettings) -> None:
    """Bring the timekeeping schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


def build_app(
    engine: AsyncEngine,
    reader: MasterDataReader,
    settings: TimekeepingSettings,
    clock: Clock,
    replay: Replay | None = None,
) -> Timekeeping:
    """The application service (what the servicer and the tests share)."""
    return Timekeeping(
        lambda: TimekeepingUnitOfWork(engine, reader),
        clock=clock,
        future_allowance_days=settings.future_allowance_days,
        approval_sla=settings.approval_sla,
        max_escalation_level=settings.max_escalation_level,
        replay_masterdata=replay,
    )


async def bootstrap(settings: TimekeepingSettings) -> Service:
    """Wire the service: database, master data, backbone, use cases, servicer, relay, consumers
    (master data, billing's invoices), escalation; all on one clock."""
    clock = clock_for(settings.clock_start)
    # The service acts as APP_ROLE: it may read and append its audit records, never change them.
    engine = create_engine(settings.database_url, application_name="accrue-timekeeping", role=APP_ROLE)
    audit = AuditTrail("timekeeping", engine, tables.audit_events, tables.idempotency_keys, clock)
    auth = service_auth("timekeeping", settings.internal_keys_dir, clock, on_refused=audit.refused)
    channel = client.channel(
        settings.masterdata_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    reader = MasterDataReader(
        masterdata_service_pb2_grpc.MasterDataServiceStub(channel), tables.md_projection
    )
    backbone = await Backbone.connect(
        settings.nats_url,
        "timekeeping",
        replicas=settings.stream_replicas,
        clock=clock,
        access=NatsAccess.from_settings(settings),
    )
    app = build_app(engine, reader, settings, clock, masterdata_replay(backbone.js))
    servicer = TimekeepingServicer(app)
    # Single submissions commit a few hundred times a second, each with one event: gathering a
    # burst for up to 20 ms makes one relay transaction of it instead of one each.
    relay = backbone.relay(engine, tables.outbox, coalesce=0.02)
    md_consumer = ConsumerRunner(
        backbone.js, lambda: UnitOfWork(engine), tables.inbox, masterdata_subscription(), clock=clock
    )
    billing_consumer = ConsumerRunner(
        backbone.js,
        lambda: TimekeepingUnitOfWork(engine, reader),
        tables.inbox,
        billing_subscription(app),
        clock=clock,
    )

    async def escalations() -> None:
        await run_escalations(app, settings.escalation_interval_seconds)

    def register(server: grpc.aio.Server) -> None:
        timekeeping_service_pb2_grpc.add_TimekeepingServiceServicer_to_server(servicer, server)
        audit.register(server)

    async def close_channel() -> None:
        await channel.close()

    return Service(
        name="timekeeping",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        background=[relay.run, audit.sealer().run, md_consumer.run, billing_consumer.run, escalations],
        warm_up=[partial(fill_pool, engine, settings.database_pool_warm)],
        on_stop=[backbone.close, close_channel, engine.dispose],
        interceptors=[audit.interceptor()],
        auth=auth.interceptor,
    )
