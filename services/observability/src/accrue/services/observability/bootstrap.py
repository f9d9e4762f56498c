"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc

from accrue.audit.v1 import audit_service_pb2_grpc
from accrue.billing.v1 import billing_service_pb2_grpc
from accrue.db import create_engine, fill_pool
from accrue.db.audit_api import AuditAggregator, AuditSource
from accrue.db.audit_interceptor import SERVICE_NAME as AUDIT_SERVICE_NAME
from accrue.db.audit_interceptor import AuditTrail
from accrue.db.migrations import upgrade
from accrue.db.roles import APP_ROLE
from accrue.eventbus import Backbone, ConsumerRunner, NatsAccess
from accrue.identity.grpc import service_auth
from accrue.observability.v1 import observability_service_pb2_grpc
from accrue.runtime.client import channel
from accrue.runtime.clock import clock_for
from accrue.runtime.server import Background, Service
from accrue.services.observability.adapters import tables
from accrue.services.observability.adapters.jetstream import StreamState
from accrue.services.observability.adapters.sources import GrpcStageSources
from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
from accrue.services.observability.entrypoints.consumers import subscriptions
from accrue.services.observability.entrypoints.grpc_api import ObservabilityServicer
from accrue.services.observability.service_layer.handlers import Observability
from accrue.services.observability.settings import ObservabilitySettings
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.observability.v1.ObservabilityService"


async def migrate(settings: ObservabilitySettings) -> None:
    """Bring the observability schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


async def bootstrap(settings: ObservabilitySettings) -> Service:
    """Wire the service: database, backbone, use cases, servicer, consumers, metrics export."""
    clock = clock_for(settings.clock_start)
    # The service acts as APP_ROLE: it may read and append its audit records, never change them.
    engine = create_engine(settings.database_url, application_name="accrue-observability", role=APP_ROLE)
    audit = AuditTrail("observability", engine, tables.audit_events, tables.idempotency_keys, clock)
    auth = service_auth("observability", settings.internal_keys_dir, clock, on_refused=audit.refused)
    backbone = await Backbone.connect(
        settings.nats_url,
        "observability",
        replicas=settings.stream_replicas,
        clock=clock,
        access=NatsAccess.from_settings(settings),
    )

    def uow() -> ObservabilityUnitOfWork:
        return ObservabilityUnitOfWork(engine)

    timekeeping = channel(
        settings.timekeeping_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    billing = channel(
        settings.billing_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    sources = GrpcStageSources(
        timekeeping_service_pb2_grpc.TimekeepingServiceStub(timekeeping),
        billing_service_pb2_grpc.BillingServiceStub(billing),
    )
    app = Observability(uow, StreamState(backbone.js), sources, clock=clock)
    servicer = ObservabilityServicer(app)
    consumers = [ConsumerRunner(backbone.js, uow, tables.inbox, s, clock=clock) for s in subscriptions(app)]
    relay = backbone.relay(engine, tables.outbox)

    def register(server: grpc.aio.Server) -> None:
        observability_service_pb2_grpc.add_ObservabilityServiceServicer_to_server(servicer, server)
        audit.register(server)

    async def export() -> None:
        await app.export_metrics(settings.metrics_interval_seconds)

    background: list[Background] = [relay.run, audit.sealer().run, *(c.run for c in consumers), export]
    if settings.reconciliation_interval_seconds > 0:

        async def reconcile() -> None:
            await app.reconcile_on_schedule(settings.reconciliation_interval_seconds)

        background.append(reconcile)

    # Every service's audit trail, read as observability itself; its own in-process.
    masterdata = channel(
        settings.masterdata_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    forecasting = channel(
        settings.forecasting_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    trails: dict[str, AuditSource] = {
        name: audit_service_pb2_grpc.AuditTrailServiceStub(c)
        for name, c in (
            ("masterdata", masterdata),
            ("timekeeping", timekeeping),
            ("billing", billing),
            ("forecasting", forecasting),
        )
    }
    trails["observability"] = audit.local_source()
    servicer.audit = AuditAggregator(trails)

    async def close_channels() -> None:
        await timekeeping.close()
        await billing.close()
        await masterdata.close()
        await forecasting.close()

    return Service(
        name="observability",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        background=background,
        warm_up=[partial(fill_pool, engine, settings.database_pool_warm)],
        on_stop=[backbone.close, close_channels, engine.dispose],
        interceptors=[audit.interceptor()],
        auth=auth.interceptor,
    )
