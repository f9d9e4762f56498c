"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import create_engine, fill_pool
from accrue.db.audit_interceptor import SERVICE_NAME as AUDIT_SERVICE_NAME
from accrue.db.audit_interceptor import AuditTrail
from accrue.db.migrations import upgrade
from accrue.db.roles import APP_ROLE
from accrue.eventbus import Backbone, ConsumerRunner, NatsAccess
from accrue.identity.grpc import service_auth
from accrue.masterdata.v1 import masterdata_service_pb2_grpc
from accrue.runtime.clock import Clock, clock_for
from accrue.runtime.server import Service
from accrue.services.masterdata.adapters import tables
from accrue.services.masterdata.adapters.unit_of_work import MasterDataUnitOfWork
from accrue.services.masterdata.domain.ownership import Ownership
from accrue.services.masterdata.entrypoints.consumers import billing_subscription
from accrue.services.masterdata.entrypoints.grpc_api import MasterDataServicer
from accrue.services.masterdata.service_layer.handlers import MasterData
from accrue.services.masterdata.settings import MasterDataSettings

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.masterdata.v1.MasterDataService"


async def migrate(settings: MasterDataSettings) -> None:
    """Bring the masterdata schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


def build_app(engine: AsyncEngine, clock: Clock, ownership: Ownership | None = None) -> MasterData:
    """The application service on a database (what unit tests and the servicer share)."""
    uow_factory: Callable[[], MasterDataUnitOfWork] = lambda: MasterDataUnitOfWork(engine)  # noqa: E731
    return MasterData(uow_factory, ownership, clock=clock)


async def bootstrap(settings: MasterDataSettings) -> Service:
    """Wire the service: database, backbone, use cases, gRPC servicer, outbox relay and the
    consumer of billing's invoices (milestone status)."""
    clock = clock_for(settings.clock_start)
    # The service acts as APP_ROLE: it may read and append its audit records, never change them.
    engine = create_engine(settings.database_url, application_name="accrue-masterdata", role=APP_ROLE)
    audit = AuditTrail("masterdata", engine, tables.audit_events, tables.idempotency_keys, clock)
    auth = service_auth("masterdata", settings.internal_keys_dir, clock, on_refused=audit.refused)
    backbone = await Backbone.connect(
        settings.nats_url,
        "masterdata",
        replicas=settings.stream_replicas,
        clock=clock,
        access=NatsAccess.from_settings(settings),
    )
    app = build_app(engine, clock, Ownership(settings.owners))
    # The per-entity methods are attached from the Kind table, which mypy cannot see.
    servicer = MasterDataServicer(app)  # type: ignore[abstract]
    relay = backbone.relay(engine, tables.outbox)
    billing_consumer = ConsumerRunner(
        backbone.js,
        lambda: MasterDataUnitOfWork(engine),
        tables.inbox,
        billing_subscription(app),
        clock=clock,
    )

    def register(server: grpc.aio.Server) -> None:
        masterdata_service_pb2_grpc.add_MasterDataServiceServicer_to_server(servicer, server)
        audit.register(server)

    return Service(
        name="masterdata",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        background=[relay.run, audit.sealer().run, billing_consumer.run],
        warm_up=[partial(fill_pool, engine, settings.database_pool_warm)],
        on_stop=[backbone.close, engine.dispose],
        interceptors=[audit.interceptor()],
        auth=auth.interceptor,
    )
