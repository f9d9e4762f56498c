"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

from pathlib import Path

import grpc

from accrue.billing.v1 import billing_service_pb2_grpc
from accrue.db import UnitOfWork, create_engine
from accrue.db.idempotency import IdempotencyInterceptor
from accrue.db.migrations import upgrade
from accrue.eventbus import Backbone, ConsumerRunner
from accrue.masterdata.v1 import masterdata_service_pb2_grpc
from accrue.mdprojection import MasterDataReader
from accrue.runtime import client
from accrue.runtime.server import Service
from accrue.services.billing.adapters import tables
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.entrypoints.consumers import masterdata_subscription, time_subscription
from accrue.services.billing.entrypoints.grpc_api import BillingServicer
from accrue.services.billing.service_layer.handlers import Billing
from accrue.services.billing.settings import BillingSettings

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.billing.v1.BillingService"


async def migrate(settings: BillingSettings) -> None:
    """Bring the billing schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


async def bootstrap(settings: BillingSettings) -> Service:
    """Wire the service: database, master data, backbone, use cases, servicer, relay, consumers."""
    engine = create_engine(settings.database_url, application_name="accrue-billing")
    channel = client.channel(settings.masterdata_address)
    reader = MasterDataReader(
        masterdata_service_pb2_grpc.MasterDataServiceStub(channel), tables.md_projection
    )
    backbone = await Backbone.connect(settings.nats_url, "billing", replicas=settings.stream_replicas)

    def uow() -> BillingUnitOfWork:
        return BillingUnitOfWork(engine, reader)

    app = Billing(uow)
    servicer = BillingServicer(app)
    relay = backbone.relay(engine, tables.outbox, settings.database_url)
    consumers = [
        ConsumerRunner(backbone.js, lambda: UnitOfWork(engine), tables.inbox, masterdata_subscription()),
        ConsumerRunner(backbone.js, uow, tables.inbox, time_subscription(app)),
    ]

    def register(server: grpc.aio.Server) -> None:
        billing_service_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)

    async def close_channel() -> None:
        await channel.close()

    return Service(
        name="billing",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME],
        background=[relay.run, *(c.run for c in consumers)],
        on_stop=[backbone.close, close_channel, engine.dispose],
        interceptors=[IdempotencyInterceptor(engine, tables.idempotency_keys)],
    )
