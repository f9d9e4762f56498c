"""The composition root: the only place that builds engines, clients and publishers."""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path

import grpc

from accrue.billing.v1 import billing_service_pb2_grpc
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
from accrue.runtime.clock import clock_for
from accrue.runtime.server import Service
from accrue.services.billing.adapters import tables
from accrue.services.billing.adapters.erp import ErpAdapter
from accrue.services.billing.adapters.erp.file import FileErp
from accrue.services.billing.adapters.erp.tryton import TrytonErp
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.access import FourEyes
from accrue.services.billing.domain.posting import RetryPolicy
from accrue.services.billing.entrypoints.consumers import (
    masterdata_subscription,
    milestone_subscription,
    time_subscription,
)
from accrue.services.billing.entrypoints.grpc_api import BillingServicer
from accrue.services.billing.service_layer.handlers import Billing
from accrue.services.billing.service_layer.posting import PostingWorker
from accrue.services.billing.service_layer.scheduler import Scheduler
from accrue.services.billing.settings import BillingSettings
from accrue.telemetry import get_logger

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = "accrue.billing.v1.BillingService"


async def migrate(settings: BillingSettings) -> None:
    """Bring the billing schema to the newest revision."""
    await upgrade(settings.database_url, tables.SCHEMA, MIGRATIONS)


def erp_adapter(settings: BillingSettings) -> ErpAdapter:
    """The ERP the settings name."""
    if settings.erp_adapter == "tryton":
        return TrytonErp(
            settings.tryton_url,
            settings.tryton_database,
            settings.tryton_user,
            settings.tryton_password,
            company_id=settings.tryton_company_id,
            revenue_account=settings.tryton_revenue_account,
            receivable_account=settings.tryton_receivable_account,
        )
    directory = settings.erp_file_dir.resolve()
    log.info("erp_file_adapter", directory=str(directory))
    return FileErp(directory)


async def bootstrap(settings: BillingSettings) -> Service:
    """Wire the service: database, master data, backbone, ERP, use cases, servicer, background work."""
    # The one clock every part of the service reads "now" from (pinned in tests and demos).
    clock = clock_for(settings.clock_start)
    # The service acts as APP_ROLE: it may read and append its audit records, never change them.
    engine = create_engine(settings.database_url, application_name="accrue-billing", role=APP_ROLE)
    audit = AuditTrail("billing", engine, tables.audit_events, tables.idempotency_keys, clock)
    auth = service_auth("billing", settings.internal_keys_dir, clock, on_refused=audit.refused)
    channel = client.channel(
        settings.masterdata_address, interceptors=auth.client_interceptors, tls=settings.grpc_tls()
    )
    reader = MasterDataReader(
        masterdata_service_pb2_grpc.MasterDataServiceStub(channel), tables.md_projection
    )
    backbone = await Backbone.connect(
        settings.nats_url,
        "billing",
        replicas=settings.stream_replicas,
        clock=clock,
        access=NatsAccess.from_settings(settings),
    )
    erp = erp_adapter(settings)

    def uow() -> BillingUnitOfWork:
        return BillingUnitOfWork(engine, reader)

    app = Billing(
        uow,
        clock,
        erp=erp,
        cap_thresholds=settings.cap_thresholds,
        cutoff_delay=dt.timedelta(hours=settings.schedule_cutoff_hours),
        four_eyes=FourEyes.of(settings.four_eyes_legal_entities),
    )
    servicer = BillingServicer(app)
    relay = backbone.relay(engine, tables.outbox)
    consumers = [
        ConsumerRunner(
            backbone.js, lambda: UnitOfWork(engine), tables.inbox, masterdata_subscription(), clock=clock
        ),
        ConsumerRunner(backbone.js, uow, tables.inbox, time_subscription(app), clock=clock),
        ConsumerRunner(backbone.js, uow, tables.inbox, milestone_subscription(app), clock=clock),
    ]
    poster = PostingWorker(
        uow,
        app,
        erp,
        retry=RetryPolicy(
            settings.erp_max_attempts,
            dt.timedelta(seconds=settings.erp_retry_first_seconds),
            dt.timedelta(seconds=settings.erp_retry_max_seconds),
        ),
        rate_per_second=settings.erp_rate_per_second,
        poll_interval=settings.posting_poll_seconds,
        call_timeout=settings.erp_call_timeout_seconds,
        lease=dt.timedelta(seconds=settings.posting_lease_seconds),
        clock=clock,
    )
    background = [relay.run, audit.sealer().run, *(c.run for c in consumers), poster.run]
    if settings.schedule_interval_seconds > 0:
        background.append(Scheduler(app, settings.schedule_interval_seconds).run)

    def register(server: grpc.aio.Server) -> None:
        billing_service_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)
        audit.register(server)

    async def close_channel() -> None:
        await channel.close()

    return Service(
        name="billing",
        settings=settings,
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        background=background,
        warm_up=[partial(fill_pool, engine, settings.database_pool_warm)],
        on_stop=[backbone.close, close_channel, erp.close, engine.dispose],
        interceptors=[audit.interceptor()],
        auth=auth.interceptor,
    )
