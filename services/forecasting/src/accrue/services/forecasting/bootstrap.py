"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc

from accrue.db import create_engine, fill_pool
from accrue.db.audit_interceptor import SERVICE_NAME as AUDIT_SERVICE_NAME
from accrue.db.audit_interceptor import AuditTrail
from accrue.db.migrations import upgrade
from accrue.db.roles import APP_ROLE
from accrue.eventbus import Backbone, ConsumerRunner, NatsAccess
from accrue.forecasting.v1 import forecasting_service_pb2_grpc
from accrue.identity.grpc import service_auth
from accrue.runtime.clock import clock_for
from accrue.runtime.server import Service
from accrue.services.forecasting.adapters import tables
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.entrypoints.consumers import subscriptions
from accrue.services.forecasting.entrypoints.grpc_api import ForecastingServicer
from accrue.services.forecasting.service_layer.handlers import Forecasting, Options
from accrue.services.forecasting.service_layer.scheduler import VersionScheduler
from accrue.services.forecasting.settings import ForecastingSettings

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.forecasting.v1.ForecastingService"


async def migrate(settings: ForecastingSettings) -> None:
    """Bring the forecasting schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


async def bootstrap(settings: ForecastingSettings) -> Service:
    """Wire the service: database, backbone, use cases, servicer, relay, consumers, schedule."""
    clock = clock_for(settings.clock_start)
    # The service acts as APP_ROLE: it may read and append its audit records, never change them.
    engine = create_engine(settings.database_url, application_name="accrue-forecasting", role=APP_ROLE)
    audit = AuditTrail("forecasting", engine, tables.audit_events, tables.idempotency_keys, clock)
    auth = service_auth("forecasting", settings.internal_keys_dir, clock, on_refused=audit.refused)
    backbone = await Backbone.connect(
        settings.nats_url,
        "forecasting",
        replicas=settings.stream_replicas,
        clock=clock,
        access=NatsAccess.from_settings(settings),
    )

    def uow() -> ForecastingUnitOfWork:
        return ForecastingUnitOfWork(engine)

    durables: list[tuple[str, str]] = []

    async def watermark() -> dict[str, int]:
        """Per stream, the consumer's ack floor: every event up to it is applied and committed."""
        out = {}
        for stream, durable in durables:
            info = await backbone.js.consumer_info(stream, durable)
            out[stream] = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        return out

    app = Forecasting(
        uow,
        Options(horizon_months=settings.horizon_months, reporting_currency=settings.reporting_currency),
        clock=clock,
        watermark=watermark,
    )
    servicer = ForecastingServicer(app)
    relay = backbone.relay(engine, tables.outbox)
    subs = subscriptions(app)
    durables.extend((s.stream, s.durable) for s in subs)
    consumers = [ConsumerRunner(backbone.js, uow, tables.inbox, s, clock=clock) for s in subs]
    background = [relay.run, audit.sealer().run, *(c.run for c in consumers)]
    if settings.version_schedule_seconds > 0:
        background.append(VersionScheduler(app, settings.version_schedule_seconds).run)

    def register(server: grpc.aio.Server) -> None:
        forecasting_service_pb2_grpc.add_ForecastingServiceServicer_to_server(servicer, server)
        audit.register(server)

    return Service(
        name="forecasting",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        background=background,
        warm_up=[partial(fill_pool, engine, settings.database_pool_warm)],
        on_stop=[backbone.close, engine.dispose],
        interceptors=[audit.interceptor()],
        auth=auth.interceptor,
    )
